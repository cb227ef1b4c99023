"""Placeholder entry for a stage whose issue has not landed yet: says where it will live."""
from __future__ import annotations

import argparse
from typing import Callable

from pretrain.config import SRDDConfig


def not_yet(stage: str, issue: str) -> Callable[[SRDDConfig, argparse.Namespace], int]:
    def main(cfg: SRDDConfig, args: argparse.Namespace) -> int:
        raise SystemExit(f"srdd {stage}: not available yet (lands with {issue})")
    main.not_yet = issue  # type: ignore[attr-defined]  (lets `srdd demo` skip stages not built yet)
    return main
