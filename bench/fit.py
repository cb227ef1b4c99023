"""Fit time of the chinchilla form with bootstrap intervals (goal, docs/scaling.md "Benchmark": 200 resamples on 250 points < 60 s on 2 cores).

    python -m bench.fit [--points 250] [--bootstrap 200] [--json bench/results/fit.json]

One process, one thread (OMP_NUM_THREADS=1): the fit is serial. Rows: the default
search (best `starts` grid points) and, for reference, the whole 4,500-point grid
of Besiroglu et al. for the point fit alone.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from analysis.scaling import synthetic  # noqa: E402
from pretrain.config.fit import FitConfig  # noqa: E402
from analysis.scaling.fit import fit_frame  # noqa: E402
from pretrain.outputs import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=250)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--json", default="bench/results/fit.json")
    args = parser.parse_args()
    frame = synthetic.chinchilla_table(n=args.points, seed=0)
    cases = [("default search + bootstrap", FitConfig(form="chinchilla", bootstrap=args.bootstrap)),
             ("full 4500-point grid, no bootstrap", FitConfig(form="chinchilla", bootstrap=0, starts=0))]
    rows = []
    for name, cfg in cases:
        t0 = time.perf_counter()
        fit = fit_frame(frame, cfg)
        rows.append({"case": name, "points": args.points, "resamples": cfg.bootstrap, "starts": cfg.starts or 4500,
                     "boot_starts": cfg.boot_starts, "time_s": round(time.perf_counter() - t0, 2),
                     "alpha": round(fit.params["alpha"], 4), "beta": round(fit.params["beta"], 4), "E": round(fit.params["E"], 4)})
    print(f"{'case':<36} {'points':>6} {'resamples':>9} {'starts':>6} {'time_s':>7} {'alpha':>7} {'beta':>7} {'E':>7}")
    for r in rows:
        print(f"{r['case']:<36} {r['points']:>6} {r['resamples']:>9} {r['starts']:>6} {r['time_s']:>7} {r['alpha']:>7} {r['beta']:>7} {r['E']:>7}")
    print(f"truth: {synthetic.CHINCHILLA_TRUTH}; goal: < 60 s for the first row on 2 cores")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"rows": rows, "cpu_count": os.cpu_count(), "goal_s": 60})


if __name__ == "__main__":
    main()
