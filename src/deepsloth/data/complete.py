"""Completeness of an import: every class in every split, as many images per class as the layout
promises. An import that falls short is refused before the cache is touched (the cache that was
there stays as it was), unless the caller allows it explicitly (`allow_incomplete=True`,
`deepsloth data import ... --allow-incomplete`); then the shortfalls are recorded in meta.json
under "incomplete".
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Sequence

from ..errors import DeepslothError


def _names(classes: Sequence[str], idx: Sequence[int], limit: int = 4) -> str:
    shown = ", ".join(classes[i] for i in idx[:limit])
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def class_problems(splits: Dict[str, Sequence[int]], classes: Sequence[str], equal_counts: bool = True) -> List[str]:
    """What is missing or uneven in {split: labels} against `classes`, one phrase each."""
    problems = []
    for split, labels in splits.items():
        counts = Counter(int(y) for y in labels)
        missing = [c for c in range(len(classes)) if counts.get(c, 0) == 0]
        if missing:
            problems.append(f"the {split} split has no images of class{'es' if len(missing) > 1 else ''} "
                            f"{_names(classes, missing)}")
        elif equal_counts:
            per = [counts[c] for c in range(len(classes))]
            lo, hi = per.index(min(per)), per.index(max(per))
            if per[lo] != per[hi]:
                problems.append(f"the {split} split has unequal class counts ({classes[lo]}: {per[lo]}, "
                                f"{classes[hi]}: {per[hi]}; the layout has as many images in every class)")
    return problems


def settle(problems: List[str], dataset: str, where: str, allow_incomplete: bool) -> List[str]:
    """Refuse an incomplete import (one line) unless it is allowed; returns the problems."""
    if problems and not allow_incomplete:
        extra = len(problems) - 1
        more = f" (and {extra} more shortfall{'s' if extra > 1 else ''})" if extra else ""
        raise DeepslothError(f"refusing an incomplete {dataset} import from {where}: {problems[0]}{more}; the "
                             f"dataset cache was not changed; pass --allow-incomplete (allow_incomplete=True) "
                             f"to import it anyway")
    return problems


__all__ = ["class_problems", "settle"]
