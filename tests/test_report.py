"""`srdd report`: the notebook executes headlessly on a fixture runs directory into self-contained HTML."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from analysis.report import inject_parameters, percent_to_notebook
from tests.fixtures.runs_small.make import make_runs_dir

SECTIONS = ("Training curves", "Per-scale losses", "Seeds and intervals", "Scaling fits", "SRDD vs VAR at equal compute",
            "Convergence", "Compute-optimal scaling", "Sampling cost", "Refinement at equal sampling FLOPs",
            "Scale distillation", "Zero-shot reconstruction", "Sample grids", "Evaluation metrics", "Ablation", "Claims")


def test_percent_source_round_trip():
    nb = percent_to_notebook('# %% [markdown]\n# # Title\n# text\n\n# %% tags=["parameters"]\nX = 1\n\n# %%\nprint(X)\n')
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source == "# Title\ntext"
    inject_parameters(nb, {"X": "dir/a"})
    assert nb.cells[2].source == "# Parameters\nX = 'dir/a'\n" and nb.cells[2].metadata["tags"] == ["injected-parameters"]


def _report(runs, out, cwd):
    return subprocess.run([sys.executable, "-m", "pretrain.cli", "report", "--runs", str(runs), "--out", str(out),
                           "--bootstrap", "8"], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_report_executes_on_the_fixture_and_embeds_its_figures(tmp_path):
    runs = make_runs_dir(tmp_path / "runs")
    r = _report(runs, tmp_path / "out/report.html", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tmp_path / "out/report.html").read_text()
    headings = re.findall(r"<h2[^>]*>([^<]+)", html)
    assert [h.strip() for h in headings] == list(SECTIONS)
    # 6 plots (curves, per-scale, FD vs size, fits, equal-compute curves, FD vs FLOPs) + 2 isoFLOP (one per mask)
    # + refinement plot + 8 sample grids + 1 ablation grid, all inline.
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 18
    assert "not available" not in html
    assert "goal: all of the above" in html and "better zero-shot reconstruction than VAR" in html
    assert "kv_ratio_vs_var" in html and "FD-mnist-cnn" in html and "next size" in html and "d6 (N~" in html
    assert "the default stays" in html and "200 images x 3 seeds" in html and "srdd refine-study --run d4-srdd" in html
    assert "F test p =" in html and "at equal flops_executed" in html and "srdd - var" in html
    assert html.count("reproduced") >= 3 and "not run" in html  # the claims table: 2 rows + the rule
    assert (tmp_path / "out/report.ipynb").is_file() and (tmp_path / "out/config.yaml").is_file()


@pytest.mark.slow
def test_report_degrades_gracefully_on_an_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _report(tmp_path / "empty", tmp_path / "report.html", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert html.count("not available") == 15
    assert "bench/sampling.json is missing" in html
