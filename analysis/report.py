"""`srdd report --runs DIR --out report.html`: execute the report notebook headlessly into self-contained HTML.

The notebook's source is analysis/report_notebook.py in the "percent" format
(``# %%`` code cells, ``# %% [markdown]`` cells, ``tags=["parameters"]``): it diffs
and reviews like code. This stage converts it with nbformat, injects the
parameters after the tagged cell (as papermill does), runs it with nbclient on a
kernel that is *this* interpreter (a throwaway kernelspec, so the venv's packages
are used and nothing is looked up on PATH or the network), and exports HTML with
nbconvert; figures are inline PNGs, so the HTML embeds them as data URIs.
Outputs: report.html, the executed report.ipynb beside it, and config.yaml.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from analysis.scaling.cli import fit_config
from pretrain.config import SRDDConfig, home_dir
from pretrain.outputs import atomic_write_text, save_config

SOURCE = Path(__file__).with_name("report_notebook.py")
KERNEL_NAME = "srdd-report"
_CELL = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def percent_to_notebook(text: str) -> nbformat.NotebookNode:
    """Split a percent-format script into cells; markdown cells drop their leading '# '."""
    nb = nbformat.v4.new_notebook()
    kind, tags, lines = None, [], []

    def flush() -> None:
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(re.sub(r"^# ?", "", body, flags=re.M)))
        elif kind == "code" and body:
            nb.cells.append(nbformat.v4.new_code_cell(body, metadata={"tags": tags} if tags else {}))

    for line in text.splitlines():
        m = _CELL.match(line)
        if m:
            flush()
            kind, tags, lines = ("markdown" if m["md"] else "code"), json.loads(m["tags"] or "[]"), []
        elif kind is not None:
            lines.append(line)
    flush()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3 (srdd)", "language": "python"}
    return nb


def inject_parameters(nb: nbformat.NotebookNode, params: dict[str, Any]) -> None:
    """Insert an ``injected-parameters`` cell right after the cell tagged ``parameters``."""
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0)
    nb.cells.insert(at, cell)


def _kernel_manager(spec_dir: Path) -> KernelManager:
    """A kernel that is this interpreter: ``sys.executable -m ipykernel_launcher``."""
    kdir = spec_dir / KERNEL_NAME
    kdir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (srdd)", "language": "python",
            "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}}
    (kdir / "kernel.json").write_text(json.dumps(spec))
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir)]))


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout_s: int) -> nbformat.NotebookNode:
    with tempfile.TemporaryDirectory(prefix="srdd-kernel-") as spec_dir:
        client = NotebookClient(nb, km=_kernel_manager(Path(spec_dir)), timeout=timeout_s,
                                resources={"metadata": {"path": str(cwd)}})
        client.execute()
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nb)
    return html


def build_report(runs_dir: Path, out_html: Path, bootstrap: int = 200, seed: int = 0, timeout_s: int = 600) -> Path:
    """Execute the notebook on ``runs_dir``; write ``out_html`` and the executed ``.ipynb`` beside it."""
    nb = percent_to_notebook(SOURCE.read_text())
    inject_parameters(nb, {"RUNS_DIR": str(runs_dir.resolve()), "BOOTSTRAP": bootstrap, "SEED": seed})
    try:
        execute(nb, Path.cwd(), timeout_s)
    finally:  # a failing cell still leaves the partially executed notebook to debug
        atomic_write_text(out_html.with_suffix(".ipynb"), nbformat.writes(nb))
    atomic_write_text(out_html, to_html(nb))
    return out_html


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", help="runs directory (default <SRDD_HOME>)")
    parser.add_argument("--out", help="report HTML path (default <runs>/report.html)")
    parser.add_argument("--bootstrap", type=int, help="fit.bootstrap resamples of the report's fits")
    parser.add_argument("--seed", type=int, help="fit.seed")
    parser.add_argument("--timeout-s", dest="timeout_s", type=int, default=600, help="per-cell execution timeout")


def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs) if args.runs else home_dir()
    if not runs_dir.is_dir():
        print(f"srdd report: runs directory {runs_dir} not found", file=sys.stderr)
        return 2
    fcfg = fit_config(cfg, argparse.Namespace(bootstrap=args.bootstrap, seed=args.seed))
    out = Path(args.out) if args.out else runs_dir / "report.html"
    try:
        build_report(runs_dir, out, fcfg.bootstrap, fcfg.seed, args.timeout_s)
    except CellExecutionError as e:
        print(f"srdd report: the notebook failed (see {out.with_suffix('.ipynb')}):\n{e}", file=sys.stderr)
        return 1
    save_config(cfg, out.parent)
    print(f"wrote {out}")
    return 0
