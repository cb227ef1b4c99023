"""``srdd``: one subcommand per stage of the platform.

Every subcommand takes ``--config FILE``, ``--print-config`` and dotlist overrides
(``srdd train model.size=d2 train.lr_peak=3e-4``). A stage lives in the module
named in ``STAGES``; it is imported only when its subcommand runs, so
``srdd --help`` is instant. A stage module provides
``main(cfg, args) -> int | None`` and optionally ``add_arguments(parser)``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Sequence

from pretrain.config import ConfigError, load_config, to_yaml

log = logging.getLogger("srdd")


@dataclass(frozen=True)
class Stage:
    module: str
    help: str


# Stage name -> where it lives. Names are a public contract: add, never rename.
STAGES: dict[str, Stage] = {
    "shards": Stage("data_pipeline.image_shards.write", "write WebDataset image shards from mnist | folder:PATH | tars:PATTERN | tar:PATH | cifar10:DIR | fashion-mnist[:DIR]  [data_pipeline/image_shards/write.py]"),
    "pyramids": Stage("slurm.pyramids", "precompute code-pyramid shards with tokenization workers, here or as a SLURM array  [slurm/pyramids.py]"),
    "tokenizer-train": Stage("pretrain.tokenizer.train", "train the multi-scale residual VQ-VAE  [pretrain/tokenizer/train.py]"),
    "import-var": Stage("pretrain.import_var", "import/validate VAR's official vae/var checkpoints  [pretrain/import_var.py]"),
    "sizes": Stage("pretrain.model.report", "print parameter counts of the size table  [pretrain/model/report.py]"),
    "train": Stage("pretrain.train.loop", "train one VAR/SRDD transformer with DeepSpeed ZeRO  [pretrain/train/loop.py]"),
    "sample": Stage("pretrain.sampling.cli", "sample image grids and token pyramids from a run  [pretrain/sampling/cli.py]"),
    "edit": Stage("pretrain.sampling.edit", "zero-shot inpaint | outpaint | superres  [pretrain/sampling/edit.py]"),
    "distill": Stage("pretrain.distill.task", "distill a teacher onto a shorter scale schedule from its samples (or --data-only: the control)  [pretrain/distill/task.py]"),
    "edit-study": Stage("analysis.edit_study", "zero-shot reconstruction scored: inpaint/outpaint/superres, VAR vs SRDD, +-refinement, seeds -> edits.csv  [analysis/edit_study.py]"),
    "distill-study": Stage("analysis.distill_study", "teacher vs distilled vs data-only vs re-indexed: FD over seeds, sampling FLOPs, latency -> distill.csv  [analysis/distill_study.py]"),
    "policy-train": Stage("analysis.policy_train", "train the learned restart policy on measured quality gains  [analysis/policy_train.py]"),
    "eval-net-train": Stage("analysis.metrics.feature_net", "train the platform's own feature network  [analysis/metrics/feature_net.py]"),
    "eval": Stage("analysis.evaluate", "sample from a run and compute FD/IS/precision/recall  [analysis/evaluate.py]"),
    "refine-study": Stage("analysis.refine_study", "FD vs sampling FLOPs of every refinement -> refinement.csv  [analysis/refine_study.py]"),
    "fid": Stage("analysis.fid", "FID-inception between two image sets (sources or samples.npz)  [analysis/fid.py]"),
    "fit": Stage("analysis.scaling.cli", "fit scaling laws to a runs table  [analysis/scaling/cli.py]"),
    "report": Stage("analysis.report", "execute the report notebook into HTML  [analysis/report.py]"),
    "claims": Stage("analysis.claims", "the claims table (claims.json, verdicts from intervals) of a study directory  [analysis/claims.py]"),
    "sweep": Stage("slurm.sweep", "sizes x budgets (or an isoFLOP grid) x masks x seeds, then the runs table  [slurm/sweep.py]"),
    "ablate": Stage("slurm.ablate", "run the Laplacian-pyramid 2x2x2 ablation grid  [slurm/ablate.py]"),
    "demo": Stage("slurm.demo", "the whole study end to end on the embedded default (--dataset cifar10 | fashion-mnist)  [slurm/demo.py]"),
}


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config merged over the defaults")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotlist overrides, e.g. model.size=d2")


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srdd",
        description="VAR/SRDD pretraining and scaling-law platform. Each stage takes dotlist overrides.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, spec in STAGES.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        _common(p)
        if name == stage:  # import only the stage that runs (torch/deepspeed imports are slow)
            add = getattr(importlib.import_module(spec.module), "add_arguments", None)
            if add is not None:
                add(p)
                _defer_required(p)
    return parser


def _defer_required(parser: argparse.ArgumentParser) -> None:
    """Check a stage's required flags (and required one-of groups, e.g. ``--tokens | --flops``) after
    the config, so `--print-config` and key errors come first. A requirement is met when any of its
    flags was given (their defaults must be None)."""
    groups = [[a] for a in parser._actions if a.required and a.option_strings]
    groups += [list(g._group_actions) for g in parser._mutually_exclusive_groups if g.required]
    for actions in groups:
        for action in actions:
            action.required = False
    for group in parser._mutually_exclusive_groups:
        group.required = False
    parser.set_defaults(_required=[([a.dest for a in actions], " | ".join("/".join(a.option_strings) for a in actions))
                                   for actions in groups], _parser=parser)


def _stage_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if a in STAGES), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = _stage_of(argv)
    parser = build_parser(stage)
    args, extra = parser.parse_known_args(argv)
    # dotlist overrides may sit anywhere among the flags: `srdd eval --run R a=1 --refresh b=2`
    stray = [tok for tok in extra if tok.startswith("-") or "=" not in tok]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + extra
    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"srdd {args.stage}: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    missing = [flags for dests, flags in getattr(args, "_required", [])
               if all(getattr(args, dest, None) is None for dest in dests)]
    if missing:
        args._parser.error(f"the following arguments are required: {', '.join(missing)}")
    module = importlib.import_module(STAGES[args.stage].module)
    try:
        rc = module.main(cfg, args)
    except ConfigError as e:
        print(f"srdd {args.stage}: config error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
