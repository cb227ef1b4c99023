"""VAR's official VQVAE (and transformer) from a source checkout (``$VAR_SRC``), for reference
tensors and benchmarks.

Only VAR's VAE files are imported (models/vqvae.py, basic_vae.py, quant.py, plus its top-level
dist.py that quant.py needs): they are loaded as a stand-in package so VAR's
``models/__init__`` (which pulls in the transformer and huggingface_hub) never runs.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path


def var_src() -> Path | None:
    path = os.environ.get("VAR_SRC")
    return Path(path) if path and (Path(path) / "models" / "vqvae.py").is_file() else None


def import_var_vqvae(src: Path) -> types.ModuleType:
    """The ``models.vqvae`` module of VAR's checkout (has VQVAE, Encoder, Decoder)."""
    if "var_models" not in sys.modules:
        if str(src) not in sys.path:
            sys.path.insert(0, str(src))
        pkg = types.ModuleType("var_models")
        pkg.__path__ = [str(src / "models")]
        sys.modules["var_models"] = pkg
    return importlib.import_module("var_models.vqvae")


def import_var_transformer(src: Path) -> types.ModuleType:
    """VAR's own ``models`` package (``models.VAR``, ``models.VQVAE``) for benchmarks against it.

    Its ``models/var.py`` imports ``models.*`` absolutely and ``huggingface_hub`` only for a hub
    mixin class, so the checkout goes on sys.path and a stand-in mixin is registered when the
    package is not installed (nothing here may reach a model hub).
    """
    if "huggingface_hub" not in sys.modules and importlib.util.find_spec("huggingface_hub") is None:
        hub = types.ModuleType("huggingface_hub")
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = hub
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    return importlib.import_module("models")
