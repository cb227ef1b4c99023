"""``srdd claims --study DIR``: the claims table, claim by claim, from what the study ran (docs/claims.md).

Writes ``DIR/claims.json`` (schema: docs/claims.schema.json, validated before writing) and
``DIR/claims.csv``. Each claim object has exactly the keys of FIELDS; what a row's numbers need
said (how its interval was made, why it was not run) goes to ``notes``, a list in the same order
(and the ``note`` column of claims.csv). Every row is computed from the study's outputs; no verdict
is written by hand:

    verdict = "reproduced"   when ci_low > 0
              "contradicted" when ci_high < 0
              "inconclusive" otherwise
              "not run"      when the study has no data for it (numbers null, ``note`` says what is missing)

``delta`` and its interval are signed so that a positive value means the claim holds: for a
lower-is-better metric, baseline minus claimant. ``var`` is the baseline side (the block-causal VAR
model, or the claim's baseline: one-pass sampling, the data-only student, the lever setting the
paper found worse ...) and ``srdd`` the side the claim is about; docs/claims.md lists each row's sides.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from analysis import study as st
from analysis import intervals
from analysis.intervals import LEVEL
from pretrain.config import SRDDConfig
from pretrain.outputs import atomic_write_text

FORMAT = "srdd-claims-v1"
FIELDS = ("claim", "source", "metric", "var", "srdd", "delta", "ci_low", "ci_high", "n_seeds", "verdict")
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "claims.schema.json"

SRDD = "SRDD (arXiv 2509.22636)"
HONG = "Hong & Belkadi (arXiv 2510.02826)"


def verdict(ci_low: Optional[float], ci_high: Optional[float], measured: bool = False) -> str:
    """The verdict of a signed difference's interval (positive = the claim holds, analysis/intervals.py
    ``verdict``). Without an interval: "inconclusive" when the difference was ``measured`` (one
    seed, nothing to resample), else "not run"."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive" if measured else "not run"
    return intervals.verdict(ci_low, ci_high, "reproduced", "contradicted")


def _clean(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def claim_row(claim: str, source: str, metric: str, var: Any = None, srdd: Any = None, delta: Any = None,
              ci_low: Any = None, ci_high: Any = None, n_seeds: Optional[int] = None, note: str = "") -> dict[str, Any]:
    """One row; its verdict follows from the interval. Without a delta the row is ``not run`` and
    all its numbers are null (``note`` should say why); a delta without an interval (one seed,
    no sample replicates) is ``inconclusive`` with null bounds."""
    lo, hi = _clean(ci_low), _clean(ci_high)
    v = verdict(lo, hi, measured=_clean(delta) is not None)
    if v == "inconclusive" and lo is None:
        note = note or "one seed and no sample replicates: no interval"
    if v == "not run":
        row = dict.fromkeys(FIELDS[3:9])
    else:
        row = {"var": _clean(var), "srdd": _clean(srdd), "delta": _clean(delta), "ci_low": lo, "ci_high": hi,
               "n_seeds": int(n_seeds) if n_seeds else 1}
    out = {"claim": claim, "source": source, "metric": metric, **row, "verdict": v}
    return out | ({"note": note} if note else {})


@dataclass
class StudyOutputs:
    """What the claims read from a study directory; every part is optional."""

    root: Path
    runs: list[st.Run] = field(default_factory=list)

    @classmethod
    def load(cls, root: str | Path) -> "StudyOutputs":
        return cls(Path(root), st.load_runs(root))

    def csv(self, rel: str) -> Optional[pd.DataFrame]:
        path = self.root / rel
        return pd.read_csv(path) if path.is_file() else None

    @cached_property
    def sampling(self) -> list[dict[str, Any]]:
        path = self.root / "bench" / "sampling.json"
        if not path.is_file():
            return []
        obj = json.loads(path.read_text())
        rows = obj.get("rows", []) if isinstance(obj, dict) else obj
        return [r for r in rows if r.get("run")]  # rows of trained runs only (bench/sampling.py --runs)


# ---- the claims -------------------------------------------------------------------------------------
EQUAL_COMPUTE = "Markovian (SRDD) attention matches or beats block-causal (VAR) quality at equal training compute"
CONVERGENCE = "SRDD converges faster than VAR"
SAMPLING_COST = "SRDD samples at lower cost than VAR"
REFINE = "Refinement (resampling) improves SRDD samples at equal sampling FLOPs"
DISTILL = "The distilled short schedule keeps the teacher's quality"
ZERO_SHOT = "SRDD reconstructs zero-shot (inpaint/outpaint/super-res) better than VAR"
FEW_STEPS = "A few coarse-to-fine steps capture most of the gain"


def _comparison(claim: str, metric: str, cmp: Optional[st.Comparison], why: str) -> dict[str, Any]:
    if cmp is None:
        return claim_row(claim, SRDD, metric, note=why)
    return claim_row(claim, SRDD, f"{metric} {cmp.detail}".strip(), cmp.var, cmp.srdd, cmp.delta, cmp.ci_low,
                     cmp.ci_high, cmp.n_seeds)


def equal_compute_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    size = st.largest_paired_size(s.runs)
    why = "no VAR and SRDD runs of one size and seed in runs.csv"
    rows = []
    for x, what in st.FLOP_COLUMNS.items():
        cmp = st.equal_compute_loss(s.runs, size, x) if size else None
        rows.append(_comparison(f"{EQUAL_COMPUTE} (val loss, {what})", f"val_loss (nats/token), {size}", cmp, why))
    for metric in ("fd", "fid_inception"):
        cmp = st.equal_tokens(s.runs, size, metric) if size else None
        if cmp is None and metric == "fid_inception":
            continue  # FID-inception only where the study computes it (natural images)
        name = s.runs[0].fd_metric if metric == "fd" and s.runs and s.runs[0].fd_metric else metric
        note = _flops_note(s.runs, size) if size else ""
        row = _comparison(f"{EQUAL_COMPUTE} ({name})", f"{name} at equal training tokens, {size}", cmp,
                          why if size else "no evaluated runs")
        if note and row["verdict"] != "not run":
            row["note"] = note
        rows.append(row)
    return rows


def _flops_note(runs: Sequence[st.Run], size: str) -> str:
    pairs = st.paired(runs, size)
    ratios = {x: np.mean([getattr(s_, x) / getattr(v, x) for v, s_ in pairs]) for x in st.FLOP_COLUMNS}
    return ("equal tokens; SRDD used " + ", ".join(f"{r:.3f}x VAR's {x}" for x, r in ratios.items())
            + (" (<= 1 in both: a win here is a win at equal compute)" if all(r <= 1 for r in ratios.values()) else ""))


def convergence_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    rows = []
    for y, what in (("loss", "val loss"), ("fd", "FD")):
        attr = st.CURVES[y][0]
        size = st.largest_paired_size([r for r in s.runs if len(getattr(r, attr))])
        why = ("no paired VAR/SRDD val curves" if y == "loss" else
               "not run: no scored snapshots (train.snapshots and srdd eval --snapshots; the demo scores its largest size's)")
        for x in ("tokens", "flops"):
            cmp = st.convergence(s.runs, size, x, y=y) if size else None
            rows.append(_comparison(f"{CONVERGENCE} ({x} to a fixed {what})",
                                    f"training {x} to reach the highest final {what} among the {size} runs, {size}:",
                                    cmp, why))
    return rows


def sampling_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    by_mask = {r["variant"]: r for r in s.sampling}
    rows = []
    specs = (("latency", "latency_s", "sampling loop latency per call (s)"),
             ("FLOPs", "flops", "sampling forward FLOPs per call"),
             ("KV memory", "kv_cache_bytes_peak", "peak KV-cache bytes per call"))
    for what, key, metric in specs:
        claim = f"{SAMPLING_COST} ({what})"
        if not {"var", "srdd"} <= set(by_mask):
            rows.append(claim_row(claim, SRDD, metric, note="no bench/sampling.json rows of trained var and srdd runs"))
            continue
        v, r = by_mask["var"], by_mask["srdd"]
        label = f"{metric}, {v['size']} trained models, batch {v['batch']}"
        if key == "latency_s":
            n = min(len(v["latency_runs_s"]), len(r["latency_runs_s"]))
            a, b = np.asarray(v["latency_runs_s"][:n], dtype=float), np.asarray(r["latency_runs_s"][:n], dtype=float)
            d, lo, hi = intervals.paired_ci(a, b)  # the repeats are interleaved VAR, SRDD: paired by repeat
            rows.append(claim_row(claim, SRDD, f"{label}, mean of {n} repeats", a.mean(), b.mean(), d, lo, hi, 1,
                                  note="t interval over timed repeats paired by repeat (one model pair)"))
        else:  # counted, not measured: no noise
            d = float(v[key]) - float(r[key])
            rows.append(claim_row(claim, SRDD, label, v[key], r[key], d, d, d, 1, note="exact count (no noise)"))
    return rows


def refinement_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    """The best refinement against the better of ``none`` and the tuned ``onepass`` sampler:
    refine-study's own verdict (refinement.json: ``fd_gain`` = FD(baseline) - FD(refinement)
    with its t interval over paired sampling seeds), the sides' FD from refinement.csv. Picking
    the best of several refinements is optimistic; the note says so."""
    table, path = s.csv("refinement.csv"), s.root / "refinement.json"
    metric = "FD(best one-pass sampler) - FD(best refinement: restart/selfcorrect/policy)"
    verdicts = json.loads(path.read_text()).get("verdicts", []) if path.is_file() else []
    if table is None or not verdicts:
        return [claim_row(REFINE, SRDD, metric, note="refinement.csv / refinement.json absent (srdd refine-study not run)")]
    best = max(verdicts, key=lambda v: v["fd_gain"])
    mine = table[table["model"] == best["model"]]
    base = mine[mine["method"].isin(["none", "onepass"])]["fd"]
    tried = mine[(mine["method"] == best["method"]) & (mine["rounds"] == best["rounds"])
                 & (mine["setting"].astype(str) == str(best.get("setting")))]["fd"] if "setting" in mine else mine["fd"][:0]
    label = f"{metric}: {best['method']} R={best['rounds']} vs {best['baseline']}, {best['model']}"
    return [claim_row(REFINE, SRDD, label, base.min() if len(base) else None, tried.iloc[0] if len(tried) else None,
                      best["fd_gain"], best["ci_low"], best["ci_high"], int(mine["n_seeds"].min()),
                      note=f"the best of {len(verdicts)} refinement rows (optimistic); t interval over paired sampling "
                           f"seeds (refine-study), at {best['flops_ratio']:.2f}x the baseline's sampling FLOPs")]


def distill_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    """Non-inferiority of the distilled student (FD within the study's tolerance of the teacher's)
    and distillation vs the data-only control: distill-study's own signed quantities and their
    intervals over paired seeds (issue 17's distill_goal.json), the sides' FD from distill.csv."""
    table, path = s.csv("distill.csv"), s.root / "distill_goal.json"
    keep = "FD non-inferiority: 1.05 x FD(teacher) - FD(distilled)"
    beats = "FD(data-only student) - FD(distilled student)"
    wins = f"{DISTILL}: distillation beats the data-only short schedule"
    if table is None or not path.is_file():
        why = "distill.csv / distill_goal.json absent (srdd distill-study not run)"
        return [claim_row(DISTILL, SRDD, keep, note=why), claim_row(wins, SRDD, beats, note=why)]
    fd = {r["model"]: r for r in table.to_dict("records")}
    goal = {g["metric"]: g for g in json.loads(path.read_text())}
    out = []
    for claim, metric, key, base, note in (
            (DISTILL, keep, "1.05 x FD(teacher) - FD(distilled)", "teacher", "var = teacher, srdd = distilled student"),
            (wins, beats, "FD(data_only) - FD(distilled)", "data_only",
             "var = data-only control at the same total FLOPs, srdd = distilled student")):
        g = goal.get(key)
        if g is None or base not in fd or "distilled" not in fd:
            out.append(claim_row(claim, SRDD, metric, note=f"distill_goal.json has no {key!r} or distill.csv lacks a side"))
            continue
        out.append(claim_row(claim, SRDD, f"{metric}; {fd['distilled']['scales']} vs {fd['teacher']['scales']} scales",
                             fd[base]["fd"], fd["distilled"]["fd"], g["value"], g["ci_low"], g["ci_high"],
                             int(fd["distilled"]["n_seeds"]), note=f"{note}; t interval over paired seeds (distill-study)"))
    return out


def zero_shot_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    """PSNR of the whole completed image, SRDD - VAR, mean over the edit masks without refinement,
    per seed (the seeds edit the same images with the same masks: paired), t interval over seeds
    (issue 17's edits_seeds.csv)."""
    table = s.csv("edits_seeds.csv")
    metric = "PSNR of the completed image (dB), SRDD - VAR, mean over edit masks, no refinement"
    if table is None:
        return [claim_row(ZERO_SHOT, SRDD, metric, note="edits_seeds.csv absent (srdd edit-study not run)")]
    plain = table[table["refine"].astype(str) == "none"]
    by_seed = plain.pivot_table(index=["seed", "mask"], columns="model", values="psnr_all").dropna()
    if not {"var", "srdd"} <= set(by_seed.columns) or not len(by_seed):
        return [claim_row(ZERO_SHOT, SRDD, metric, note="edits_seeds.csv has no var and srdd rows of one mask and seed")]
    per_seed = by_seed.groupby(level="seed").mean()  # higher PSNR is better: claimant minus baseline
    masks = sorted(by_seed.index.get_level_values("mask").unique())
    d, lo, hi = intervals.paired_ci(per_seed["srdd"], per_seed["var"])
    return [claim_row(ZERO_SHOT, SRDD, f"{metric} ({', '.join(masks)})", float(per_seed["var"].mean()),
                      float(per_seed["srdd"].mean()), d, lo, hi, len(per_seed), note="t interval over paired seeds (edit-study)")]


# Hong & Belkadi's lever effects: the setting they found better (analysis/ablate.py PAPER_BETTER).
def lever_claims(s: StudyOutputs) -> list[dict[str, Any]]:
    from analysis.ablate import LEVERS, PAPER_BETTER

    table = s.csv("ablation/ablation.csv")
    out = []
    for lever, (better, claim) in PAPER_BETTER.items():
        worse = next(x for x in LEVERS[lever] if x != better)
        metric = f"FD({worse}) - FD({better}), mean over matched pairs of ablation cells"
        text = f"{claim[0].upper()}{claim[1:]} ({lever} lever)"
        if table is None or "fd" not in table:
            out.append(claim_row(text, HONG, metric, note="ablation/ablation.csv absent (srdd ablate not run)"))
            continue
        diffs = _matched_differences(table, lever, worse, better)
        if not len(diffs):
            out.append(claim_row(text, HONG, metric, note="no pair of cells differing only in this lever has FD"))
            continue
        d, lo, hi = intervals.mean_ci(diffs)
        out.append(claim_row(text, HONG, f"{metric} ({len(diffs)} pairs)", None, None, d, lo, hi, 1,
                             note="one seed per cell: t interval over the matched pairs (the other levers' settings)"))
    return out


def _matched_differences(table: pd.DataFrame, lever: str, worse: str, better: str) -> np.ndarray:
    from analysis.ablate import LEVERS

    others = [k for k in LEVERS if k != lever]
    frame = table.assign(_fd=pd.to_numeric(table["fd"], errors="coerce")).pivot_table(index=others, columns=lever,
                                                                                      values="_fd")
    if worse not in frame or better not in frame:
        return np.array([])
    return (frame[worse] - frame[better]).dropna().to_numpy(dtype=float)


def few_steps_claim(s: StudyOutputs) -> list[dict[str, Any]]:
    """Share of the FD gain (1 scale -> all K) reached after the first half of the scales, minus 1/2."""
    size = st.sizes_of(s.runs)[-1] if s.runs else None
    for mask in ("var", "srdd"):
        c = st.cell(s.runs, size, mask) if size else []
        K = next((len(r.eval["fd_by_scales"]) for r in c if r.eval.get("fd_by_scales")), 0)
        if K:
            k = math.ceil(K / 2)
            got = st.coarse_to_fine_gain(c, k)
            if got is not None:
                mean, lo, hi, n = got
                return [claim_row(FEW_STEPS, HONG, f"share of the FD gain from 1 to {K} scales reached by the first {k} "
                                  f"scales, minus 1/2 ({size}-{mask}: samples decoded from their first k scales)",
                                  None, mean, mean - 0.5, lo - 0.5, hi - 0.5, n,
                                  note="srdd = the share; 'most' = more than half")]
    return [claim_row(FEW_STEPS, HONG, "FD against the number of scales decoded",
                      note="no eval with fd_by_scales (srdd eval --fd-by-scales)")]


CLAIMS: tuple[Callable[[StudyOutputs], list[dict[str, Any]]], ...] = (
    equal_compute_claims, convergence_claims, sampling_claims, refinement_claims, distill_claims, zero_shot_claims,
    lever_claims, few_steps_claim)


def build_claims(root: str | Path) -> list[dict[str, Any]]:
    outputs = StudyOutputs.load(root)
    return [row for make in CLAIMS for row in make(outputs)]


def validate(document: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError (naming the path) when ``document`` breaks docs/claims.schema.json."""
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA.read_text()))


def claims_document(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The claims.json document: claim objects with exactly FIELDS, their notes in a parallel list."""
    return {"format": FORMAT, "study": name, "level": LEVEL, "claims": [{k: r[k] for k in FIELDS} for r in rows],
            "notes": [r.get("note", "") for r in rows]}


def write_claims(root: str | Path, rows: Optional[list[dict[str, Any]]] = None) -> Path:
    """``root/claims.json`` (validated) and ``root/claims.csv`` (FIELDS + note)."""
    root = Path(root)
    rows = build_claims(root) if rows is None else rows
    document = claims_document(root.name, rows)
    validate(document)
    atomic_write_text(root / "claims.json", json.dumps(document, indent=2) + "\n")  # the keys in FIELDS order
    atomic_write_text(root / "claims.csv", pd.DataFrame(rows, columns=[*FIELDS, "note"]).to_csv(index=False))
    return root / "claims.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory (runs.csv, run directories, study CSVs)")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    path = write_claims(args.study)
    rows = json.loads(path.read_text())["claims"]
    width = max(len(r["claim"]) for r in rows)
    num = lambda x: "-" if x is None else f"{x:.4g}"  # noqa: E731  (null: no interval, or not run)
    for r in rows:
        nums = "" if r["verdict"] == "not run" else f"  delta {num(r['delta'])} [{num(r['ci_low'])}, {num(r['ci_high'])}] n={r['n_seeds']}"
        print(f"{r['claim']:<{width}}  {r['verdict']:<12}{nums}")
    print(f"wrote {path}")
    return 0
