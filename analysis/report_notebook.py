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
# ## Scaling fits
# Per mask: VAR's form L = (N/N_c)^-alpha and L = E + A/N^alpha on the final validation loss,
# with bootstrap 95% intervals, and the predicted loss of the next size up (its parameter
# count scaled from the largest run by depth^3).

# %%
fits = {}
if table is None:
    not_available(f"{RUNS_DIR}/runs.csv is missing")
else:
    rows, bands = [], []
    fig, ax = plt.subplots()
    for mask in masks:
        sub = table[table["mask"].astype(str) == mask] if "mask" in table.columns else table
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
# Validation loss against training FLOPs; the table compares each mask's compute power law
# L = (C/C_c)^-alpha at the FLOPs of every run (ratio < 1: SRDD reaches a lower loss).

# %%
if table is None or not {"flops", "mask"} <= set(table.columns) or not {"var", "srdd"} <= set(masks):
    not_available("runs.csv with flops and mask columns and both var and srdd runs")
else:
    compute_fits, fig = {}, plt.figure()
    ax = fig.gca()
    for mask in ("var", "srdd"):
        sub = table[table["mask"] == mask]
        try:
            compute_fits[mask] = fit_frame(sub, FitConfig(form="power", x="flops", bootstrap=BOOTSTRAP, seed=SEED))
        except (RunsTableError, FloatingPointError) as e:
            not_available(f"compute fit for mask={mask}: {e}")
            continue
        curve_axes(ax, compute_fits[mask], validate_frame(sub, ["flops"], "runs.csv", "auto"), label=mask)
    plt.show()
    if len(compute_fits) == 2:
        C = np.sort(table["flops"].to_numpy(dtype=float))
        L = {m: compute_fits[m].predict({"x": C}) for m in ("var", "srdd")}
        display(pd.DataFrame({"flops": C, "L_var": L["var"], "L_srdd": L["srdd"], "srdd / var": L["srdd"] / L["var"]}).round(4))
    # FD of the run's feature network, and FID-inception (the packaged TF-Inception port) beside it when evaluated
    for column, label in (("fd", "FD"), ("fid_inception", "FID-inception")):
        if column not in table.columns or table[column].isna().all():
            continue
        fig, ax = plt.subplots()
        for mask, sub in table.groupby("mask"):
            ax.plot(sub["flops"], sub[column], "o-", label=str(mask))
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel(f"{label} (lower is better)")
        ax.legend()
        plt.show()

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
