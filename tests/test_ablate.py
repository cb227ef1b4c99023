"""`srdd ablate`: the 2x2x2 grid trains every cell with the real training loop (falling loss),
samples it, scores FD and writes the table and grids; bad requests are refused by name."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys

import pytest

from analysis.ablate import CELLS, parse_cells
from slurm.ablate import main
from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.outputs import read_jsonl

TINY = ["model.size=d1", "train.batch_size=8", "train.max_steps=12", "train.log_every=1", "train.val_every=0",
        "train.val_batches=2", "train.lr_peak=1e-3", "train.wandb=disabled", "train.num_workers=0",
        "sample.batch_size=20"]


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"cells": "all", "n_per_class": 1, "fd_samples": 0, "cluster": None,
                                 "timeout_s": 60.0, **kw})


@pytest.fixture(scope="module")
def grid(tmp_path_factory, mnist_shards, tiny_tokenizer_ckpt):
    """One `srdd ablate` over all 8 cells at a tiny budget, with a (random) feature net for FD."""
    from analysis.metrics.cnn import ClassifierCNN, save_classifier

    home = tmp_path_factory.mktemp("ablate_home")
    save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), home / "net.pt", {"name": "mnist-cnn"})
    cmd = [sys.executable, "-m", "pretrain.cli", "ablate", "run_name=abl", *TINY, f"data.shards_dir={mnist_shards}",
           f"tokenizer.ckpt={tiny_tokenizer_ckpt}", f"eval.net_ckpt={home / 'net.pt'}", "--n-per-class", "2",
           "--fd-samples", "20"]
    env = {**os.environ, "SRDD_HOME": str(home), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home / "abl" / "ablation"


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_with_a_falling_loss_and_is_tabled(grid, cell):
    run = grid / cell
    final = json.loads((run / "final.json").read_text())
    assert final["pyramid"] == cell and final["step"] == 12
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < sum(losses[:3])  # the same loop, the cell's loss, going down
    row = next(r for r in csv.DictReader(open(grid / "ablation.csv")) if r["cell"] == cell)
    space, codes, bands = cell.split("-")
    assert (row["space"], row["codes"], row["bands"], row["status"]) == (space, codes, bands, "completed")
    assert float(row["final_loss"]) == pytest.approx(final["val_loss"])
    assert [float(row[f"val_loss_s{k}"]) for k in range(6)] == pytest.approx(final["val_loss_per_scale"])
    assert int(row["tokens"]) == 12 * 8 * 130  # the same token budget in every cell
    assert float(row["latency_s"]) > 0 and float(row["flops"]) > 0 and math.isfinite(float(row["fd"]))
    assert row["fd_metric"] == "FD-mnist-cnn"
    from PIL import Image

    assert Image.open(grid / f"{cell}.png").size == (2 + 2 * 34, 2 + 10 * 34)  # 10 classes x 2 per class, 32 px


@pytest.mark.slow
def test_grid_table_matches_parameters_and_notes(grid):
    rows = list(csv.DictReader(open(grid / "ablation.csv")))
    assert [r["cell"] for r in rows] == list(CELLS)
    notes = json.loads((grid / "ablation.json").read_text())["notes"]
    assert "loss_unit" in notes["loss"] and (grid / "config.yaml").is_file()
    params = {r["cell"]: int(r["params"]) for r in rows}
    # same body: cells with the same space and codes (only bands differ) have identical parameter counts
    for space in ("latent", "pixel"):
        for codes in ("discrete", "continuous"):
            assert params[f"{space}-{codes}-residual"] == params[f"{space}-{codes}-absolute"]


def test_bad_requests_are_refused_by_name(srdd_home):
    with pytest.raises(ConfigError, match="--cells.*latent-discrete-sideways"):
        parse_cells("latent-discrete-sideways")
    with pytest.raises(ConfigError, match=r"sample\.refine=mr with pyramid\..*use sample\.refine=none"):
        main(load_config(overrides=["sample.refine=mr"]), args())
    with pytest.raises(ConfigError, match=r"tokenizer\.ckpt.*latent cells"):
        main(load_config(overrides=[f"tokenizer.ckpt={srdd_home / 'none.pt'}"]), args(cells="latent-continuous-absolute"))


@pytest.mark.slurm
@pytest.mark.slow
def test_cells_on_slurm_train_as_jobs_and_score_as_an_array(slurm_cluster, monkeypatch, srdd_home, mnist_shards):
    """--cluster slurm: each cell's run is one submitit job (slurm/runs.py), its scoring one array task."""
    slurm_cluster.activate(monkeypatch)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning")
    cfg = load_config(overrides=["run_name=sub", *TINY, f"data.shards_dir={mnist_shards}", "slurm.cpus_per_task=1"])
    assert main(cfg, args(cells="pixel-discrete-absolute", cluster="slurm")) == 0
    out = srdd_home / "sub" / "ablation"
    (row,) = csv.DictReader(open(out / "ablation.csv"))
    assert row["cell"] == "pixel-discrete-absolute" and row["status"] == "completed"
    assert row["fd"] == "" and "fd-samples 0" in row["fd_note"]  # FD skipped: said so, column empty
    assert list((out / "pixel-discrete-absolute" / "submitit").glob("*_0_result.pkl"))  # trained as a job
    assert list((out / "submitit").glob("*/*_result.pkl")) and (out / "pixel-discrete-absolute.png").is_file()


def test_lever_effects_pair_cells_that_differ_in_one_lever():
    import pandas as pd

    from analysis.ablate import lever_effects, paper_comparison

    rows = []
    for cell in CELLS:
        space, codes, bands = cell.split("-")
        fd = 10 + (5 if space == "pixel" else 0) + (2 if codes == "continuous" else 0) - (1 if bands == "absolute" else 0)
        rows.append({"cell": cell, "space": space, "codes": codes, "bands": bands, "fd": fd, "final_loss": 1.0})
    effects = lever_effects(pd.DataFrame(rows), metrics=("fd", "final_loss"))
    fd = effects[effects["metric"] == "fd"].set_index("lever")
    assert fd.loc["space", "mean"] == -5 and fd.loc["codes", "mean"] == -2 and fd.loc["bands", "mean"] == 1
    assert (fd["pairs"] == 4).all() and fd.loc["bands", "first_wins"] == 0
    assert set(effects[effects["metric"] == "final_loss"]["lever"]) == {"bands"}  # units differ elsewhere
    lines = paper_comparison(effects)
    assert "latent better here" in lines[0] and "agrees" in lines[0] and "disagrees" in lines[2]
