# %% [markdown]
# # SRDD / VAR scaling study
# Executed by `srdd report --runs DIR`; every section reads the runs-directory
# contract of docs/scaling.md and says what is missing instead of failing.

# %% tags=["parameters"]
RUNS_DIR = "runs"  # replaced by an injected cell
BOOTSTRAP = 200
SEED = 0

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display

from pretrain.config.fit import FitConfig
from analysis import study as st
from analysis.scaling.choose import choose_form
from analysis.scaling.fit import fit_frame
from analysis.scaling.plots import curve_axes
from analysis.scaling.rundir import RunsDir, next_size, scaled_params
from analysis.scaling.table import RunsTableError, validate_frame

plt.rcParams.update({"figure.dpi": 90, "figure.figsize": (6, 3.6)})
rd = RunsDir(RUNS_DIR)
table = rd.table()
runs = rd.runs()
sizes = list(table["size"]) if table is not None and "size" in table.columns else []
display(Markdown(f"Runs directory `{Path(RUNS_DIR).resolve()}`: {len(runs)} runs."))


def not_available(what: str) -> None:
    display(Markdown(f"*not available: {what}*"))


def run_label(run: str) -> tuple[str, str]:
    """(size, mask) of a run from runs.csv, else ('?', run)."""
    if table is not None and {"run", "size", "mask"} <= set(table.columns):
        row = table[table["run"] == run]
        if len(row):
            return str(row["size"].iloc[0]), str(row["mask"].iloc[0])
    return "?", run


masks = sorted({run_label(r)[1] for r in runs})
study_runs = st.load_runs(RUNS_DIR)


def with_interval(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    """``mean [lo, hi]``; ``mean (no interval)`` for one seed without sample replicates."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:.{digits}g} (no interval)"
    return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"

# %% [markdown]
# ## Training curves
# Train loss (solid) and validation loss (markers) against training tokens, one panel per attention mask.

# %%
if not runs:
    not_available(f"no runs.csv or */metrics.jsonl under {RUNS_DIR}")
else:
    fig, axes = plt.subplots(1, len(masks), figsize=(5 * len(masks), 3.6), squeeze=False, sharey=True)
    for ax, mask in zip(axes[0], masks):
        for run in runs:
            size, m = run_label(run)
            if m != mask:
                continue
            tr, va = rd.records(run, "train"), rd.records(run, "val")
            if len(tr):
                line, = ax.plot(tr["tokens"], tr["loss"], label=size)
                if len(va):
                    ax.plot(va["tokens"], va["loss"], "o", ms=3, color=line.get_color())
        ax.set_xscale("log")
        ax.set_title(f"mask = {mask}")
        ax.set_xlabel("tokens")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    plt.show()

# %% [markdown]
# ## Per-scale losses
# Validation loss at each scale of the pyramid (last validation record of each run).

# %%
per_scale = {run: rd.records(run, "val") for run in runs}
per_scale = {r: v["loss_per_scale"].iloc[-1] for r, v in per_scale.items() if len(v) and "loss_per_scale" in v}
if not per_scale:
    not_available("no val records with loss_per_scale in the runs' metrics.jsonl")
else:
    fig, ax = plt.subplots()
    for run, losses in per_scale.items():
        size, mask = run_label(run)
        ax.plot(range(len(losses)), losses, "--" if mask == "srdd" else "-", marker="o", ms=3, label=f"{size} {mask}")
    ax.set_xlabel("scale index k")
    ax.set_ylabel("val loss")
    ax.legend(fontsize=7, ncol=2)
    plt.show()
    display(pd.DataFrame(per_scale).T.rename(columns=lambda k: f"s{k}").round(4))

# %% [markdown]
# ## Seeds and intervals
# Every size x mask as a mean over its training seeds with its 95% t interval (analysis/intervals.py:
# each seed repeats training and the evaluation's sampling, so the seeds' spread holds both; one
# seed has no interval and draws no bar). `class_acc`: the
# evaluation classifier's accuracy on class-conditional samples (the label each image was drawn for).
# Below: does FD fall from each size to the next beyond its interval?

# %%
summary = st.summary(study_runs)
if not len(summary):
    not_available(f"no completed runs in {RUNS_DIR}/runs.csv")
else:
    shown = summary[["size", "mask", "n_seeds"]].copy()
    for m in ("val_loss", "fd", "class_acc", "fid_inception"):
        if m in summary:
            shown[m] = [with_interval(a, b, c) if np.isfinite(a) else "" for a, b, c in
                        zip(summary[m], summary[f"{m}_ci_low"], summary[f"{m}_ci_high"])]
    display(shown.set_index(["size", "mask"]))
    if "fd" in summary:
        fig, ax = plt.subplots()
        for mask, sub in summary.groupby("mask"):
            err = np.nan_to_num(np.vstack([sub["fd"] - sub["fd_ci_low"], sub["fd_ci_high"] - sub["fd"]]))
            ax.errorbar(sub["params"], sub["fd"], yerr=err, fmt="o-", capsize=3, label=str(mask))
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(f"{study_runs[0].fd_metric} (lower is better), 95% interval")
        ax.legend()
        plt.show()
        trend = [row for mask in masks for row in st.size_trend(study_runs, mask, "fd")]
        if trend:
            display(pd.DataFrame(trend).round(4))

# %% [markdown]
# ## Scaling fits
# Per mask: VAR's form L = (N/N_c)^-alpha and L = E + A/N^alpha on the final validation loss,
# with bootstrap 95% intervals (seeds resampled within each size when the study has several), the
# predicted loss of the next size up (its parameter count scaled from the largest run by depth^3),
# and which form the data calls for: the lack-of-fit F test of the pure power law against the seed
# scatter (analysis/scaling/choose.py). Dashed: the slopes of VAR's published laws
# L = (2.0 N)^-0.23 (last scale) and (2.5 N)^-0.20 (all scales), N in billions (arXiv 2404.02905,
# ImageNet 256 px, reducible loss), drawn through each mask's smallest size as a reference slope only.

# %%
fits = {}
if table is None:
    not_available(f"{RUNS_DIR}/runs.csv is missing")
else:
    rows, bands = [], []
    fig, ax = plt.subplots()
    for mask in masks:
        sub = table[table["mask"].astype(str) == mask] if "mask" in table.columns else table
        if {"params", "val_loss"} <= set(sub.columns) and len(sub):
            choice = choose_form(sub)
            display(Markdown(f"**{mask}**: {choice.reason}"))
            x0, y0 = float(sub["params"].min()), float(sub.loc[sub["params"].idxmin(), "val_loss"])
            xs = np.array([x0, float(sub["params"].max())])
            for expo in (0.23, 0.20):
                ax.plot(xs, y0 * (xs / x0) ** -expo, "k--", lw=0.7, alpha=0.6)
        for form in ("power", "power+const"):
            cfg = FitConfig(form=form, x="params", bootstrap=BOOTSTRAP, seed=SEED)
            try:
                fit = fit_frame(sub, cfg, source=f"runs.csv mask={mask}")
            except (RunsTableError, FloatingPointError) as e:
                rows.append({"mask": mask, "form": form, "note": f"not fitted: {e}"})
                continue
            fits[(mask, form)] = fit
            row = {"mask": mask, "form": form, "points": fit.n_points}
            for k, v in fit.params.items():
                lo, hi = fit.intervals.get(k, (np.nan, np.nan))
                row[k] = f"{v:.4g} [{lo:.3g}, {hi:.3g}]"
            nxt = next_size([str(s) for s in sub["size"]]) if "size" in sub.columns else None
            if nxt is not None:
                top = sub.loc[sub["params"].idxmax()]
                n_next = scaled_params(float(top["params"]), str(top["size"]), nxt)
                mid, lo, hi = fit.predict_band({"x": np.array([n_next])})
                row["next size"] = f"{nxt} (N~{n_next:.3g}): L = {mid[0]:.4f} [{lo[0]:.4f}, {hi[0]:.4f}]"
            rows.append(row)
            if form == "power":
                curve_axes(ax, fit, validate_frame(sub, ["params"], "runs.csv", "auto"), label=mask)
    ax.set_title("val loss vs parameters, power-law fits per mask", fontsize=9)
    plt.show()
    display(pd.DataFrame(rows).set_index(["mask", "form"]))

# %% [markdown]
# ## SRDD vs VAR at equal compute
# Two FLOP columns (docs/model.md): **attended** FLOPs count only the (query, key) pairs the mask
# allows (`flops`), **executed** FLOPs what the attention path computes (`flops_executed`). Left
# panels: validation loss against attended FLOPs; right panels: against executed FLOPs (one row per
# size, one line per run). Then FD of every size against its training FLOPs, attended (left) and
# executed (right). The table reads both masks' curves at the same FLOPs (the smaller final
# of each VAR/SRDD pair of one seed) and gives VAR - SRDD with its interval over seeds (> 0: SRDD
# lower); FD compares runs of equal tokens, for which SRDD spends at most VAR's FLOPs in both columns.

# %%
sizes_eq = [s_ for s_ in st.sizes_of(study_runs) if st.paired(study_runs, s_)]
if not sizes_eq:
    not_available("VAR and SRDD runs of one size and seed with val curves")
else:
    fig, axes = plt.subplots(len(sizes_eq), 2, figsize=(10, 3 * len(sizes_eq)), squeeze=False)
    for row_axes, size in zip(axes, sizes_eq):
        for ax, x in zip(row_axes, st.FLOP_COLUMNS):
            for r in study_runs:
                if r.size == size and len(r.curve):
                    ax.plot(r.curve[x], r.curve["loss"], "-" if r.mask == "var" else "--", marker="o", ms=2,
                            color="C0" if r.mask == "var" else "C1", label=f"{r.mask} seed {r.seed}")
            ax.set_xscale("log")
            ax.set_xlabel(st.FLOP_COLUMNS[x])
            ax.set_ylabel(f"{size} val loss")
            ax.legend(fontsize=6)
    plt.tight_layout()
    plt.show()
    if "fd" in summary:  # FD of each size x mask (mean over seeds, 95% interval) at its training FLOPs
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
        for ax, x in zip(axes, st.FLOP_COLUMNS):
            for mask in masks:
                cells = [(np.mean([getattr(r, x) for r in st.cell(study_runs, size, mask)]), row)
                         for size in sizes_eq for _, row in summary[(summary["size"] == size) & (summary["mask"] == mask)].iterrows()]
                if cells:
                    xs = [c for c, _ in cells]
                    fd = np.array([r["fd"] for _, r in cells])
                    err = np.nan_to_num(np.vstack([fd - [r["fd_ci_low"] for _, r in cells],
                                                   [r["fd_ci_high"] for _, r in cells] - fd]))
                    ax.errorbar(xs, fd, yerr=err, fmt="o-", capsize=3, label=mask)
            ax.set_xscale("log")
            ax.set_xlabel(f"training {st.FLOP_COLUMNS[x]}")
            ax.legend()
        axes[0].set_ylabel("FD (lower is better), 95% interval")
        plt.show()
    rows = []
    for size in sizes_eq:
        for x in st.FLOP_COLUMNS:
            c = st.equal_compute_loss(study_runs, size, x)
            if c:
                rows.append({"size": size, "comparison": f"val loss at equal {x}", "var": c.var, "srdd": c.srdd,
                             "var - srdd": with_interval(c.delta, c.ci_low, c.ci_high), "n_seeds": c.n_seeds,
                             "where": c.detail})
        for metric in ("fd", "fid_inception"):
            c = st.equal_tokens(study_runs, size, metric)
            if c:
                rows.append({"size": size, "comparison": f"{metric} at equal tokens", "var": c.var, "srdd": c.srdd,
                             "var - srdd": with_interval(c.delta, c.ci_low, c.ci_high), "n_seeds": c.n_seeds, "where": ""})
    display(pd.DataFrame(rows).round(4))

# %% [markdown]
# ## Convergence
# Training tokens and FLOPs (attended and executed) each mask needs to reach a fixed validation
# loss and a fixed FD: per size, the level that is `fraction` of the way from the first record
# down to the worst final value of the size's runs (1.0: every run just reaches it). The FD curve
# is the run's snapshots (`train.snapshots`) scored by `srdd eval --snapshots` with the final
# eval's samples and sampler (the demo scores its largest size's). Mean over seeds with the
# interval of VAR - SRDD (> 0: SRDD gets there sooner).

# %%
rows = []
for size in sizes_eq:
    for y in ("loss", "fd"):
        for fraction in (0.5, 0.9, 1.0):
            for x in ("tokens", "flops", "flops_executed"):
                c = st.convergence(study_runs, size, x, fraction, y=y)
                if c and np.isfinite(c.ci_low):
                    rows.append({"size": size, "fraction": fraction, "threshold": c.detail, "to reach": x,
                                 "var": c.var, "srdd": c.srdd, "var - srdd": with_interval(c.delta, c.ci_low, c.ci_high),
                                 "n_seeds": c.n_seeds})
if rows:
    display(pd.DataFrame(rows))
else:
    not_available("paired VAR/SRDD val curves (train.val_every > 0)")

# %% [markdown]
# ## Compute-optimal scaling
# The isoFLOP grid of `srdd demo --full` (DIR/isoflop/runs.csv: every size at each training-FLOP
# budget, attended FLOPs): per mask, Hoffmann et al.'s approach 2 (a parabola in log N per budget,
# N_opt(C) = k_N C^a, D_opt(C) = k_D C^b) and approach 3 (L = E + A/N^alpha + B/D^beta), with
# bootstrap intervals over seeds; then SRDD's exponents minus VAR's with their intervals.

# %%
iso_path = Path(RUNS_DIR) / "isoflop" / "runs.csv"
if not iso_path.is_file():
    not_available(f"{iso_path} is missing (srdd demo --full runs the isoFLOP grid)")
else:
    from analysis.scaling.fit import param_difference
    from analysis.scaling.plots import isoflop_axes

    iso = pd.read_csv(iso_path)
    iso_fits, rows = {}, []
    for mask, sub in iso.groupby("mask"):
        for form in ("isoflop", "chinchilla"):
            try:
                fit = fit_frame(sub, FitConfig(form=form, bootstrap=BOOTSTRAP, seed=SEED), source=f"isoflop mask={mask}")
            except (RunsTableError, FloatingPointError) as e:
                rows.append({"mask": mask, "form": form, "note": f"not fitted: {e}"})
                continue
            iso_fits[(mask, form)] = fit
            row = {"mask": mask, "form": form}
            for k, v in fit.params.items():
                lo, hi = fit.intervals.get(k, (np.nan, np.nan))
                row[k] = with_interval(v, lo, hi)
            rows.append(row)
            if form == "isoflop":
                fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
                isoflop_axes(a1, a2, fit, validate_frame(sub, ["params", "tokens", "flops"], "isoflop", "auto"))
                a1.set_title(f"mask = {mask}: L against N per budget (attended FLOPs)", fontsize=9)
                plt.show()
    display(pd.DataFrame(rows).set_index(["mask", "form"]))
    diffs = []
    for form, names in (("isoflop", ("a", "b")), ("chinchilla", ("alpha", "beta", "a", "b"))):
        if ("var", form) in iso_fits and ("srdd", form) in iso_fits:
            for name in names:
                d, lo, hi = param_difference(iso_fits[("srdd", form)], iso_fits[("var", form)], name)
                diffs.append({"form": form, "exponent": name, "srdd - var": with_interval(d, lo, hi)})
    if diffs:
        display(pd.DataFrame(diffs))

# %% [markdown]
# ## Sampling cost
# From `bench/sampling.py` (DIR/bench/sampling.json): latency and peak KV-cache bytes per sample, and their ratios to VAR.

# %%
sampling = rd.sampling_rows()
if sampling is None:
    not_available(f"{RUNS_DIR}/bench/sampling.json is missing or empty")
else:
    display(sampling)

# %% [markdown]
# ## Refinement at equal sampling FLOPs
# From `srdd refine-study` (DIR/refinement.csv, docs/sampling.md "Refinement study"): FD (mean over sampling
# seeds) against the sampler's forward FLOPs per image, for no refinement, the best one-pass sampler
# (temperature / top-k / top-p / the old Masked Resampling's one-pass equivalent, tuned on a separate seed),
# restart (R rounds), self-correction (models trained with `train.refine_objective`) and the learned policy;
# intervals are 95% Student-t over sampling seeds. A refinement *beats* the best one-pass sampler only when
# the interval of the per-seed FD gain over it lies above 0.

# %%
refine_table, refine_summary = rd.refinement()
if refine_table is None:
    not_available(f"{RUNS_DIR}/refinement.csv is missing (run `srdd refine-study`)")
else:
    models = list(dict.fromkeys(refine_table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        for method, sub in refine_table[refine_table["model"] == model].groupby("method", sort=False):
            sub = sub.sort_values("sampling_flops")
            ax.errorbar(sub["sampling_flops"] / 1e9, sub["fd"], yerr=[sub["fd"] - sub["fd_ci_low"], sub["fd_ci_high"] - sub["fd"]],
                        marker="o", capsize=3, label=method)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("sampling GFLOPs per image")
        ax.set_ylabel("FD (lower is better)")
        ax.legend(fontsize=7)
    plt.show()
    display(refine_table.round(4))
    lines = [f"{v['model']} {v['method']} R={v['rounds']} (`{v['setting']}`): FD gain over {v['baseline']} "
             f"{v['fd_gain']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] at {v['flops_ratio']:.2f}x the FLOPs: "
             f"**{v['outcome']}**" for v in refine_summary.get("verdicts", [])]
    if lines:
        winners = [v for v in refine_summary["verdicts"] if v["outcome"] == "beats"]
        lines.append("No refinement beats the best one-pass sampler by more than its interval: the default stays "
                     "`sample.refine=none`." if not winners else
                     f"{len(winners)} setting(s) beat the best one-pass sampler by more than the interval.")
    width = float((refine_table["fd_ci_high"] - refine_table["fd_ci_low"]).median())
    n_img, n_seed = int(refine_table["n_images"].iloc[0]), int(refine_table["n_seeds"].iloc[0])
    lines.append(f"Resolution: {n_img} images x {n_seed} seeds per point; the median 95% interval is {width:.3f} FD wide, "
                 "so differences smaller than about that are not resolved.")
    if refine_summary.get("command"):
        lines.append(f"Command: `{refine_summary['command']}`")
    display(Markdown("\n".join(f"- {line}" for line in lines)))

# %% [markdown]
# ## Scale distillation
# `DIR/distill.csv` (`srdd distill-study`, docs/sampling.md): FD of the teacher on its full schedule,
# the distilled student (trained on the teacher's samples, sampled plainly: its targets carry the
# teacher's guidance), the data-only control (the student schedule trained from scratch on data with
# the same total compute: `train_flops`, the teacher's training plus the whole distillation) and the
# teacher re-indexed to the student schedule with no training; means over seeds with 95% intervals,
# sampling FLOPs per image (guidance rows included) and transformer-loop seconds per sampler call.
# The goal: the distilled student within 5% of the teacher's FD at <= 0.75x its sampling FLOPs, and
# better than the data-only control.

# %%
from analysis.distill_study import report_section as distill_section

distill = distill_section(rd.root)
if distill is None:
    not_available(f"{RUNS_DIR}/distill.csv is missing (run `srdd distill-study`)")
else:
    display(distill[0])
    display(Markdown("\n".join(f"- {line}" for line in distill[1])))

# %% [markdown]
# ## Zero-shot reconstruction
# `DIR/edits.csv` (`srdd edit-study`, docs/sampling.md): the VAR and SRDD models of one size
# edit the same held-out images (inpaint the centre box or a random box, outpaint the right half,
# super-resolve x2 / x4), without and with refinement; PSNR on the known region and the whole image,
# LPIPS-alex of the whole image, FD of the completed images; means over seeds with 95% intervals.
# The second table is SRDD minus VAR per seed, signed so that positive means SRDD reconstructs better.

# %%
from analysis.edit_study import report_section as edit_section

edits = edit_section(rd.root)
if edits is None:
    not_available(f"{RUNS_DIR}/edits.csv is missing (run `srdd edit-study`)")
else:
    display(edits[0])
    display(edits[1])
    display(Markdown(edits[2]))

# %% [markdown]
# ## Sample grids
# Every grid under each run's samples/ directory; `srdd sample` names them
# seed<S>-<refine>/grid.png, so refinement settings sit side by side.

# %%
grids = rd.sample_grids()
if not grids:
    not_available("no DIR/<run>/samples/*.png or DIR/<run>/samples/*/grid.png")
for run, pngs in grids.items():
    for png in pngs:
        display(Markdown(f"**{run}** (`{png.relative_to(rd.root / run / 'samples')}`)"))
        display(Image(filename=str(png)))

# %% [markdown]
# ## Evaluation metrics
# The last `eval` record of each run (FD / IS / precision / recall / KID with the feature network named in each column).

# %%
evals = rd.eval_table()
if evals is None:
    not_available("no eval records in the runs' metrics.jsonl")
else:
    display(evals)

# %% [markdown]
# ## Ablation
# The Laplacian-pyramid ablation grid (DIR/ablation/ablation.csv) and its sample grids.

# %%
abl_table, abl_pngs = rd.ablation()
if abl_table is None:
    not_available(f"{RUNS_DIR}/ablation/ablation.csv is missing (run `srdd ablate`)")
else:
    display(abl_table)
for png in abl_pngs:
    display(Markdown(f"`{png.relative_to(rd.root)}`"))
    display(Image(filename=str(png)))

# %% [markdown]
# ### Lever effects and the paper
# Per lever: the mean difference over the 4 pairs of cells that differ only in that lever (first
# setting minus second; lower is better), and the direction compared with Hong & Belkadi's MNIST
# ablations (arXiv 2510.02826). Losses are compared only across bands (other pairs differ in units).

# %%
if abl_table is not None:
    from analysis.ablate import lever_effects, paper_comparison

    effects = lever_effects(abl_table)
    if len(effects):
        display(effects)
        metric = "fd" if (effects["metric"] == "fd").any() else "final_loss"
        display(Markdown("\n".join(f"- {line}" for line in paper_comparison(effects, metric))))
    else:  # e.g. a partial grid (--cells): the table above is all there is
        display(Markdown("*lever effects: no two cells of the table differ in exactly one lever*"))

# %% [markdown]
# ## Claims
# `DIR/claims.json` (`srdd claims`, schema docs/claims.schema.json): each claim's measured delta,
# signed so that > 0 means the claim holds, with its 95% interval over seeds; the verdict follows
# from the interval alone (reproduced: ci_low > 0, contradicted: ci_high < 0, else inconclusive;
# not run: the study did not measure it).

# %%
claims_path = Path(RUNS_DIR) / "claims.json"
if not claims_path.is_file():
    not_available(f"{claims_path} is missing (run `srdd claims --study DIR`)")
else:
    import json

    document = json.loads(claims_path.read_text())
    claims = pd.DataFrame(document["claims"]).assign(note=document.get("notes") or "")
    with pd.option_context("display.max_colwidth", 200):
        display(claims[["claim", "metric", "var", "srdd", "delta", "ci_low", "ci_high", "n_seeds", "verdict", "note"]])
