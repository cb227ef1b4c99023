"""The `srdd` CLI: every stage listed, overrides honoured, bad keys rejected before any work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pretrain.cli import STAGES, main

REQUIRED = ["shards", "pyramids", "tokenizer-train", "train", "sample", "edit", "eval", "fit",
            "report", "sizes", "import-var", "demo"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_stage():
    out = run_cli("--help")
    assert out.returncode == 0
    for stage in REQUIRED:
        assert stage in out.stdout, stage
    assert set(REQUIRED) <= set(STAGES)


def test_print_config_applies_overrides(capsys):
    assert main(["train", "--print-config", "model.size=d4", "train.lr_peak=3e-4"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["size"] == "d4" and cfg["train"]["lr_peak"] == 3e-4


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_rejects_unknown_key(stage, capsys):
    assert main([stage, "--print-config", "trian.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "trian.max_steps" in err and "train.max_steps" in err


def test_console_script_installed():
    out = subprocess.run([str(Path(sys.executable).parent / "srdd"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "tokenizer-train" in out.stdout


def test_overrides_may_sit_between_flags(capsys):
    assert main(["train", "model.size=d4", "--print-config", "train.max_steps=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["size"] == "d4" and cfg["train"]["max_steps"] == 7


def test_stray_positional_is_rejected(capsys):
    assert main(["train", "--print-config", "notakeyvalue"]) == 2
    assert "'notakeyvalue' is not of the form key=value" in capsys.readouterr().err


def test_required_flags_and_one_of_groups_are_checked_after_the_config(capsys):
    """`srdd sweep` needs --sizes and one of --tokens | --flops: --print-config works without them,
    and a run without them is refused naming the missing flags."""
    assert main(["sweep", "--print-config"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--sizes", "d1"])
    assert exc.value.code == 2 and "required: --tokens | --flops" in capsys.readouterr().err
