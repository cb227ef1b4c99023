"""`srdd eval` pieces: metric record naming/values and the runs-table update."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from analysis.evaluate import quality_metrics, update_runs_csv
from analysis.metrics import frechet_distance, inception_score, kernel_distance, precision_recall
from analysis.metrics.cnn import ClassifierCNN, save_classifier
from analysis.metrics.networks import FeatureNet
from analysis.metrics.reference import reference_for
from pretrain.config import load_config
from analysis.runs_table import write_runs_csv


def test_quality_metrics_are_named_by_network_and_match_the_functions(tmp_path):
    torch.manual_seed(0)
    sha = save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), tmp_path / "n.pt", {"name": "mnist-cnn"})
    from analysis.metrics.cnn import load_classifier

    net = FeatureNet("mnist-cnn", sha, load_classifier(tmp_path / "n.pt")[0])
    real = torch.rand(40, 3, 32, 32) * 2 - 1
    ref = reference_for(tmp_path / "ref.npz", net, "m", "val", lambda: [real])
    feats, probs = net.extract([torch.rand(30, 3, 32, 32) * 2 - 1])
    eval_cfg = load_config(overrides=["eval.kid_subsets=3", "eval.kid_subset_size=20"]).eval
    labels = np.arange(30) % 10
    got = quality_metrics(net, ref, feats, probs, eval_cfg, labels)
    assert set(got) == {"FD-mnist-cnn", "IS-mnist-cnn", "IS-mnist-cnn_std", "precision-mnist-cnn",
                        "recall-mnist-cnn", "KID-mnist-cnn", "KID-mnist-cnn_std", "class_acc-mnist-cnn"}
    assert got["FD-mnist-cnn"] == pytest.approx(frechet_distance(feats, ref.feats_ND))
    assert got["class_acc-mnist-cnn"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert (got["IS-mnist-cnn"], got["IS-mnist-cnn_std"]) == pytest.approx(inception_score(probs, splits=10))
    assert (got["precision-mnist-cnn"], got["recall-mnist-cnn"]) == precision_recall(ref.feats_ND, feats, k=3)
    assert got["KID-mnist-cnn"] == pytest.approx(kernel_distance(ref.feats_ND, feats, subsets=3, subset_size=20)[0])
    no_kid = quality_metrics(net, ref, feats, probs, load_config(overrides=["eval.kid=false"]).eval)
    assert not any(k.startswith("KID") for k in no_kid)


def test_runs_csv_row_updated_in_place(tmp_path):
    table = tmp_path / "runs.csv"
    assert not update_runs_csv(table, "a", {"fd": 1.0})  # no table: nothing written
    write_runs_csv(table, [{"run": "a", "val_loss": 2.0, "status": "completed"}, {"run": "b", "val_loss": 3.0, "status": "failed"}])
    assert update_runs_csv(table, "a", {"fd": 1.5, "FD-mnist-cnn": 1.5, "fd_metric": "FD-mnist-cnn"})
    assert not update_runs_csv(table, "zzz", {"fd": 9.0})
    rows = {r["run"]: r for r in csv.DictReader(open(table))}
    assert rows["a"]["fd"] == "1.5" and rows["a"]["fd_metric"] == "FD-mnist-cnn" and rows["a"]["val_loss"] == "2.0"
    assert rows["b"]["fd"] == "" and rows["b"]["status"] == "failed"


def test_eval_without_a_trained_run_fails_clearly(tmp_path):
    from pretrain.cli import main

    assert main(["eval", "--run", "nope"]) == 2  # ConfigError naming the missing model.pt -> exit code 2


@pytest.fixture
def run(srdd_home, tiny_tokenizer_ckpt, mnist_shards, pyramid_shards):
    """A run as the training exporter leaves it (random weights: the pipeline, not quality, is under test)."""
    from pretrain.model import build_model
    from pretrain.tokenizer import load_tokenizer, tokenizer_hash
    from pretrain.train.export import save_model

    cfg = load_config(overrides=["run_name=tiny", "model.size=d1", "model.mask=srdd", f"tokenizer.ckpt={tiny_tokenizer_ckpt}",
                                 f"data.shards_dir={mnist_shards}", f"data.pyramids_dir={pyramid_shards}", "data.num_workers=0"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums)
    save_model(srdd_home / "tiny" / "model.pt", model.state_dict(), cfg, step=7, tokens=0,
               tokenizer_hash=tokenizer_hash(tiny_tokenizer_ckpt))
    write_runs_csv(srdd_home / "runs.csv", [{"run": "tiny", "val_loss": 6.0, "status": "completed"}])
    for name, seed in (("a", 0), ("b", 1)):  # two feature networks (random init: fast; eval-net-train is tested elsewhere)
        torch.manual_seed(seed)
        save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), srdd_home / f"net_{name}.pt", {"name": "mnist-cnn"})
    return srdd_home / "tiny"


def test_srdd_eval_appends_a_named_record_and_updates_the_runs_table(run, srdd_home, tiny_tokenizer_ckpt, capsys):
    from pretrain.cli import main
    from pretrain.outputs import read_jsonl
    from pretrain.tokenizer import load_tokenizer

    net_a = f"eval.net_ckpt={srdd_home / 'net_a.pt'}"
    assert main(["eval", "--run", "tiny", "--samples", "12", "--val-batches", "2", net_a, "sample.batch_size=6",
                 "eval.kid_subsets=2", "sample.cfg=2.0"]) == 0
    rec = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert rec["step"] == 7 and rec["n_samples"] == 12 and rec["sampler"]["cfg"] == 2.0
    for key in ("FD-mnist-cnn", "IS-mnist-cnn", "IS-mnist-cnn_std", "precision-mnist-cnn", "recall-mnist-cnn", "KID-mnist-cnn"):
        assert np.isfinite(rec[key]), key
    assert 1.0 <= rec["IS-mnist-cnn"] <= 10.0 and 0.0 <= rec["precision-mnist-cnn"] <= 1.0
    K = len(load_tokenizer(tiny_tokenizer_ckpt).patch_nums)
    assert len(rec["val_loss_per_scale"]) == K and len(rec["val_acc_per_scale"]) == K
    # Untrained model, V = 512 codes: per-scale CE near log(512) = 6.24, accuracy near chance.
    assert all(4.0 < v < 9.0 for v in rec["val_loss_per_scale"]) and rec["val_acc"] < 0.05
    assert rec["reference"]["split"] == "val" and rec["reference"]["count"] == 60  # the fixture's 60 val digits
    assert rec["feature_net"]["sha256"] == rec["reference"]["net_sha256"]
    row = next(csv.DictReader(open(srdd_home / "runs.csv")))
    assert float(row["fd"]) == pytest.approx(rec["FD-mnist-cnn"]) and row["fd_metric"] == "FD-mnist-cnn"
    assert row["val_loss"] == "6.0" and row["precision-mnist-cnn"] != ""  # the training val_loss is not overwritten
    assert (run / "eval" / "config.yaml").is_file() and (run / "eval" / "step7-mnist-cnn.json").is_file()

    # Another feature network against the cached reference: refused (exit 2) with a message naming both hashes.
    capsys.readouterr()
    net_b = f"eval.net_ckpt={srdd_home / 'net_b.pt'}"
    assert main(["eval", "--run", "tiny", "--samples", "12", "--val-batches", "0", net_b]) == 2
    assert "reference features were computed with feature net" in capsys.readouterr().err
    assert main(["eval", "--run", "tiny", "--samples", "12", "--val-batches", "0", "--refresh-reference",
                 net_b, "eval.kid=false", "sample.batch_size=12"]) == 0
    rec_b = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert rec_b["reference"]["net_sha256"] == rec_b["feature_net"]["sha256"] != rec["feature_net"]["sha256"]
    assert "KID-mnist-cnn" not in rec_b and "val_loss" not in rec_b



def test_eval_snapshots_scores_each_point_like_a_final_model(srdd_home, straight_train_run):
    """`srdd eval --snapshots` on a run with a step-4 snapshot (train.snapshots=[0.5], checked against
    its checkpoint in test_train.py): one eval_curve record per point with the run's counters, the
    final point the eval's own numbers, and each point what a plain `srdd eval` of that file gives."""
    import json
    import shutil

    from pretrain.cli import main
    from pretrain.outputs import read_jsonl

    run = srdd_home / "snap"  # a copy: the session's straight run stays as the other tests expect it
    shutil.copytree(straight_train_run, run, ignore=shutil.ignore_patterns("checkpoints", "wandb"))
    torch.manual_seed(0)
    save_classifier(ClassifierCNN(10, width=4, feat_dim=8).eval(), srdd_home / "net.pt", {"name": "mnist-cnn"})
    args = ["--samples", "12", "--val-batches", "0", "--runs-csv", "none", f"eval.net_ckpt={srdd_home / 'net.pt'}",
            "sample.batch_size=6", "eval.kid=false"]
    assert main(["eval", "--run", str(run), "--snapshots", *args]) == 0
    records = read_jsonl(run / "metrics.jsonl")
    final = [r for r in records if r["kind"] == "eval"][-1]
    curve = [r for r in records if r["kind"] == "eval_curve"]
    done = json.loads((run / "final.json").read_text())
    assert [(r["step"], r["tokens"]) for r in curve] == [(4, done["tokens"] // 2), (8, done["tokens"])]
    assert curve[1]["flops"] == done["flops"] and curve[0]["flops_executed"] * 2 == done["flops_executed"]
    assert curve[1]["FD-mnist-cnn"] == final["FD-mnist-cnn"] and curve[1]["class_acc-mnist-cnn"] == final["class_acc-mnist-cnn"]
    assert curve[0]["FD-mnist-cnn"] != curve[1]["FD-mnist-cnn"]  # other weights, other samples

    alone = srdd_home / "step4"  # the snapshot scored on its own, through the plain eval path
    alone.mkdir()
    shutil.copy(run / "snapshots" / "step00000004.pt", alone / "model.pt")
    assert main(["eval", "--run", str(alone), *args]) == 0
    rec = [r for r in read_jsonl(alone / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert rec["FD-mnist-cnn"] == pytest.approx(curve[0]["FD-mnist-cnn"], rel=1e-9)
    assert main(["eval", "--run", str(alone), "--snapshots", *args]) == 2  # no final.json: refused before sampling
