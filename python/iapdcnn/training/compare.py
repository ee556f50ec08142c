"""``python -m iapdcnn.training.compare REPORT BENCH``: puts a run's time to accuracy beside the
plain baseline's, as ``benchmarks/bench_pipeline.py`` measured them (its last JSON line, saved).
The main job prints this after training: a run alone cannot show what it saves."""

from __future__ import annotations

import json
import sys


def lines(report: dict, bench: dict) -> list[str]:
    """The comparison, one line each: this run, then every run of the benchmark."""
    t = report.get("time_to_accuracy", {})
    out = [
        "this run: "
        + ", ".join(f"{k} after {v:.1f} s" if v else f"{k} not reached" for k, v in t.items())
        + f"; final test accuracy {report['test_accuracy']:.4f}"
    ]
    runs = bench.get("runs", {})
    seeds = len(bench.get("seeds", []))
    for name, r in runs.items():
        times = ", ".join(
            f"{k[5:]} after {r[k]:.1f} s (sd {r.get(k + '_sd', 0):.1f})"
            if r[k] is not None
            else f"{k[5:]} not reached by every seed ({r.get('reached_' + k[5:], '?')})"
            for k in sorted(r)
            if k.startswith("s_to_") and not k.endswith("_sd")
        )
        out.append(
            f"bench_pipeline {name} (mean of {seeds} seeds): {times}; final "
            f"{r['final_acc']:.4f} (sd {r.get('final_acc_sd', 0):.4f})"
        )
    if bench.get("ratio_to_0.90") is not None:
        out.append(
            f"bench_pipeline: the pipeline took {bench['ratio_to_0.90']:.2f}x the baseline's time "
            "to 0.90 (the machine it ran on may differ from this one: compare ratios)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m iapdcnn.training.compare REPORT.json BENCH.json", file=sys.stderr)
        return 2
    try:
        with open(args[0]) as f:
            report = json.load(f)
        with open(args[1]) as f:
            bench = json.load(f)
    except (OSError, ValueError) as e:
        print(f"compare: cannot read {e}", file=sys.stderr)
        return 1
    print("\n".join(lines(report, bench)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
