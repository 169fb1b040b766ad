"""Text forms of results for the terminal."""
from __future__ import annotations


def pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def print_comparison(r: dict, what: str = "") -> None:
    """The text form of a comparison record (experiments.compare)."""
    m, d = r["model"], r["data"]
    print(f"{r['label']} on {m['name']} ({m['arch']}, {m['dataset']}, {m['exits']} exits): "
          f"{d['n']} test images{what}")
    if r.get("attack"):
        hp = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in r["attack"]["params"].items())
        print(f"  {hp}; seed {r['seed']}")
        c = r.get("crafting") or {}
        if c.get("seconds") is not None:
            print(f"  crafted in {c['seconds']:.1f} s" + (" (reused)" if c.get("reused") else ""))
    dep = r.get("deployment")
    if dep:
        print(f"  evaluated on the deployment defended by {dep['defence']} (thresholds: {dep['thresholds']})")
        for f, rate in (dep.get("detection") or {}).items():
            print(f"  detector at {pct(float(f))} calibrated false positives: flags {pct(rate)} of the attacked "
                  f"inputs, {pct(dep['false_positive_rate'][f])} of the clean ones")
    if r.get("norms"):
        print("  achieved norms (vs clean): " + "  ".join(
            f"{k} max {v['max']:.4g} mean {v['mean']:.4g}" for k, v in r["norms"].items()))
    print(f"  final-exit accuracy: clean {pct(r['clean']['final_accuracy'])}, "
          f"attacked {pct(r['attacked']['final_accuracy'])}")
    print("  RAD   q     efficacy clean -> attacked  reduction  EE acc clean -> attacked  latency x")
    for k, e in r["rad"].items():
        c, a = e["clean"], e["attacked"]
        print(f"  {k:>3}%  {e['threshold']:.2f}  {c['efficacy']:14.3f} -> {a['efficacy']:.3f}"
              f"  {pct(e['efficacy_reduction']):>9}  {pct(c['accuracy']):>12} -> {pct(a['accuracy']):>6}"
              f"  {e['latency_amplification']:8.2f}")
        print(f"        exits clean    {' '.join(str(x) for x in c['exit_counts'])}")
        print(f"        exits attacked {' '.join(str(x) for x in a['exit_counts'])}")
