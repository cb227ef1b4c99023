"""`make bench`: run every bench/ script and roll their headline numbers into one table.

Each script is run as a subprocess with the arguments below (chosen to finish on a
2-core CPU box; pass ``--full`` for the issues' full specifications), writes its own
JSON under ``--out``, and this script reads those JSONs back and writes
``summary.md`` + ``summary.json``: one row per headline number, with its goal from the
issues and whether it was met. A script that fails is reported as such, not hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Headline:
    bench: str
    metric: str
    value: Optional[float]
    goal: str = ""
    met: Optional[bool] = None
    note: str = ""


def _rows(obj: Any) -> list[dict[str, Any]]:
    return obj if isinstance(obj, list) else obj.get("rows", [])


def tokenizer_headlines(obj: dict[str, Any]) -> list[Headline]:
    out = []
    for row in _rows(obj):
        out.append(Headline("tokenizer", f"encode img/s ({row['config']}, {row['side_px']}px)", row["encode_img_per_s"]))
        ratio = row.get("encode_ratio_vs_var")
        if ratio is not None:
            out.append(Headline("tokenizer", "encode speed vs VAR img_to_idxBl", ratio, ">= 1.0", ratio >= 1.0,
                                f"tokens identical: {row.get('tokens_identical_to_var')}"))
    if not any(h.goal for h in out):
        out.append(Headline("tokenizer", "encode speed vs VAR img_to_idxBl", None, ">= 1.0", None,
                            "set VAR_SRC to a checkout of FoundationVision/VAR to measure"))
    return out


def pipeline_headlines(obj: dict[str, Any]) -> list[Headline]:
    return [
        Headline("pipeline", "loader supply / training-step demand", obj["supply_ratio"], ">= 10", obj["supply_ratio"] >= 10),
        Headline("pipeline", "data cost: on-the-fly encode / precomputed", obj["data_cost_ratio"]),
        Headline("pipeline", "training-step speedup from precompute", obj["step_speedup"]),
        Headline("pipeline", "precompute pyramids/s (2 workers)", obj["precompute_w2_pyramids_per_s"]),
    ]


def train_step_headlines(obj: dict[str, Any]) -> list[Headline]:
    rows = _rows(obj)
    out = [Headline("train_step", f"tokens/s {r['size']} {r['mask']} zero{r['zero']} {r['precision']} x{r['ranks']}",
                    r["tokens_per_s"]) for r in rows]
    for r in rows:
        if r["mask"] != "srdd":
            continue
        base = next((b for b in rows if b["mask"] == "var" and all(b[k] == r[k] for k in ("size", "zero", "precision", "ranks"))), None)
        if base:
            out.append(Headline("train_step", f"SRDD/VAR step time {r['size']} zero{r['zero']} {r['precision']} x{r['ranks']}",
                                r["step_s"] / base["step_s"], note="tiny sizes: attention is a small share of the step"))
    out += mask_headlines(obj.get("mask_rows", []))
    for r in obj.get("vs_var", []):
        ratio = r["speed_ratio_vs_var"]
        out.append(Headline("train_step", f"step speed vs VAR's models.VAR ({r['size']}, torch AdamW fp32)", ratio,
                            ">= 1.0", ratio >= 1.0, "same weights and batch, steps interleaved"))
    if "vs_var" not in obj:
        out.append(Headline("train_step", "step speed vs VAR's models.VAR", None, ">= 1.0", None,
                            "set VAR_SRC to a checkout of FoundationVision/VAR to measure"))
    return out


def mask_headlines(rows: list[dict[str, Any]]) -> list[Headline]:
    """SRDD vs VAR at d16 (bench/train_step.py --parts masks): each ratio against its FLOP bound."""
    from bench.train_step import RATIO_GOAL

    out = []
    for r in rows:
        if r.get("compile"):
            continue  # compiled variants measure torch.compile, not the mask
        where = f"{r['size']} {r['resolution']}px"
        if r["variant"] == "srdd" and r["attn_impl"] == "auto":
            for key in ("var_dense", "var_sparse"):
                ratio, bound = r.get(f"ratio_vs_{key}"), r[f"flop_bound_vs_{key}"]
                if ratio is not None:
                    out.append(Headline("train_step", f"SRDD/VAR-{key[4:]} step time {where}", ratio,
                                        f"within {RATIO_GOAL} of {bound:.3f}", abs(ratio - bound) <= RATIO_GOAL,
                                        "FLOP bound: executed training FLOPs"))
        ratio = r.get("ratio_vs_var_dense")
        if r["variant"] == "var" and r["attn_impl"] == "auto" and ratio is not None:
            goal = r["resolution"] >= 512
            out.append(Headline("train_step", f"VAR tiled/dense step time {where}", ratio, "< 1.0" if goal else "",
                                ratio < 1.0 if goal else None, f"FLOP bound {r['flop_bound_vs_var_dense']:.3f}"))
    return out


def sampling_headlines(obj: list[dict[str, Any]]) -> list[Headline]:
    out = []
    for r in obj:
        if r["variant"] != "srdd-6":
            continue
        size = r["size"]
        out.append(Headline("sampling", f"srdd-6 / var-10 loop latency ({size}, wall)", r["latency_ratio_vs_var"], "<= 0.78",
                            r["latency_ratio_vs_var"] <= 0.78))
        if r.get("cpu_ratio_vs_var") is not None:
            out.append(Headline("sampling", f"srdd-6 / var-10 loop CPU time ({size})", r["cpu_ratio_vs_var"], "<= 0.78",
                                r["cpu_ratio_vs_var"] <= 0.78, "robust to other load on the cores"))
        out.append(Headline("sampling", f"srdd-6 / var-10 FLOPs ({size})", r["flops_ratio_vs_var"], "~0.74 bound"))
        out.append(Headline("sampling", f"srdd-6 / var-10 KV-cache peak ({size})", r["kv_ratio_vs_var"], "<= 0.40",
                            r["kv_ratio_vs_var"] <= 0.40))
    return out


def eval_headlines(obj: dict[str, Any]) -> list[Headline]:
    out = [Headline("eval", f"images/s through {r['network']}", r["images_per_s"]) for r in _rows(obj)]
    out += [Headline("eval", f"{r['network']} pairs/s at {r['side_px']} px", r["pairs_per_s"]) for r in obj.get("lpips", [])]
    fid = obj.get("cifar_fid")
    if fid:
        out.append(Headline("eval", f"{fid['metric']} CIFAR-10 test {fid['n_real']} vs {fid['n_fake']}: rel. diff to numpy/scipy",
                            fid["rel_diff"], "<= 1e-6", fid["rel_diff"] <= 1e-6, f"FID {fid['fid']:.3f}"))
    return out


def fit_headlines(obj: dict[str, Any]) -> list[Headline]:
    out = []
    for r in _rows(obj):
        if r["resamples"]:
            out.append(Headline("fit", f"chinchilla fit, {r['points']} points x {r['resamples']} bootstrap (s)",
                                r["time_s"], "< 60 s", r["time_s"] < 60))
    return out


@dataclass
class Bench:
    name: str
    args: list[str]
    full_args: list[str]
    headlines: Callable[[Any], list[Headline]]


BENCHES = [
    Bench("tokenizer", ["--batch", "2", "--repeats", "2"], ["--batch", "4", "--repeats", "3"], tokenizer_headlines),
    Bench("pipeline", ["--steps", "20"], ["--steps", "60"], pipeline_headlines),
    Bench("train_step", ["--sizes", "d2", "--steps", "8", "--resolutions", "256", "--mask-repeats", "2"],
          ["--sizes", "d2", "d4", "--grid", "full", "--steps", "10", "--mask-repeats", "3"], train_step_headlines),
    Bench("sampling", ["--sizes", "d2,d16", "--batch", "2", "--repeats", "1", "--variants", "var-10,srdd-10,srdd-6"],
          ["--sizes", "d2,d16", "--batch", "8", "--repeats", "3"], sampling_headlines),
    Bench("eval", ["--cifar-fid", "200"], ["--cifar-fid", "1000"], eval_headlines),
    Bench("fit", [], [], fit_headlines),
]


def markdown(headlines: list[Headline]) -> str:
    lines = ["| bench | metric | value | goal | met | note |", "|---|---|---|---|---|---|"]
    for h in headlines:
        value = "—" if h.value is None else f"{h.value:.4g}"
        met = "" if h.met is None else ("yes" if h.met else "**no**")
        lines.append(f"| {h.bench} | {h.metric} | {value} | {h.goal} | {met} | {h.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for every JSON + summary")
    parser.add_argument("--only", default="", help="comma-separated subset of " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--full", action="store_true", help="the issues' full specifications (d16 batch 8: hours on CPU)")
    parser.add_argument("--reuse", action="store_true", help="summarise existing JSONs without rerunning")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    headlines: list[Headline] = []
    for bench in chosen:
        path = out / f"{bench.name}.json"
        if not args.reuse:
            cmd = [sys.executable, "-m", f"bench.{bench.name}", *(bench.full_args if args.full else bench.args),
                   "--json", str(path)]
            print(f"[bench] {' '.join(cmd[1:])}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            print(f"[bench] {bench.name}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
            if proc.returncode:
                headlines.append(Headline(bench.name, "run", None, met=False, note=f"exit code {proc.returncode}"))
                continue
        if not path.exists():
            headlines.append(Headline(bench.name, "run", None, met=False, note=f"{path} missing"))
            continue
        headlines.extend(bench.headlines(json.loads(path.read_text())))
    table = markdown(headlines)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps([asdict(h) for h in headlines], indent=2) + "\n")
    print(table)
    print(f"\nwritten: {out / 'summary.md'}")
    # A missed goal is a finding to report, not an error; a bench script that failed is.
    return 1 if any(h.metric == "run" for h in headlines) else 0


if __name__ == "__main__":
    sys.exit(main())
