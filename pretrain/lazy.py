"""Lazy package exports: a package's public names are imported on first use.

The config schema imports each component's ``config`` module, which imports its package's
``__init__``; exporting lazily keeps ``srdd --help`` and config loading free of torch.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, list[str]]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for a package exporting ``modules[path]`` names from each module."""
    home = {name: path for path, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in home:
            return getattr(importlib.import_module(home[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return list(home), __getattr__
