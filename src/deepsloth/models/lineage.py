"""Model lineage: what a model directory records about the models it was trained from.

A stage that continues another model records it under `parent`; a weight average records its
sources under `averaged_from`. `lineage(meta)` walks those records back to the first stage.
"""
from __future__ import annotations

from typing import Dict, List, Tuple


def parent_record(path, meta: dict) -> dict:
    """What a model directory records about the model it was trained from (its lineage)."""
    return {"path": str(path), "recipe": meta.get("recipe"), "seed": meta.get("seed"),
            "accuracy": meta.get("accuracy"), "train_seconds": meta.get("train_seconds"),
            "history": meta.get("history"), "parent": meta.get("parent"), "adversarial": meta.get("adversarial"),
            **({"averaged_from": meta["averaged_from"]} if "averaged_from" in meta else {}),
            **({"note": meta["note"]} if "note" in meta else {})}


def _stage(rec: dict) -> str:
    r = rec.get("recipe") or {}
    if r.get("name") == "weight-average":
        return f"mean of {len(rec.get('averaged_from') or [])}"
    if r.get("name") is None:   # no training of its own (e.g. a backbone taken out of an SDN)
        return rec.get("note") or "no training"
    return f"{r.get('name')} {r.get('epochs')} ep" + (f" lr {r['lr']:g}" if r.get("lr") is not None else "")


def lineage(meta: dict) -> Tuple[List[str], float]:
    """The training stages behind a model, oldest first, and their total training seconds.

    Follows `parent` records; for a weight average, the chain of its last source (which, in the
    zoo recipes, descends from the others) plus every other source's own seconds, each counted once.
    """
    stages: List[str] = []
    seconds: Dict[str, float] = {}

    def walk(rec: dict, key: str) -> None:
        avg = rec.get("averaged_from") or []
        for src in avg[:-1]:
            _count(src)
        if avg:
            walk(avg[-1], avg[-1].get("path", key + "/avg"))
        elif rec.get("parent"):
            walk(rec["parent"], rec["parent"].get("path", key + "/parent"))
        stages.append(_stage(rec))
        seconds[key] = rec.get("train_seconds") or 0.0

    def _count(rec: dict) -> None:
        seconds.setdefault(rec.get("path", str(id(rec))), rec.get("train_seconds") or 0.0)
        for nxt in (rec.get("averaged_from") or []) + ([rec["parent"]] if rec.get("parent") else []):
            _count(nxt)

    walk(meta, "<model>")
    return stages, float(sum(seconds.values()))


__all__ = ["parent_record", "lineage"]
