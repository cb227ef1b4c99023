"""The one config schema: omegaconf structured dataclasses, one section per component.

Every section lives in this package (``pretrain/config/<section>.py``) and imports nothing but
``fields``; every other package imports the config, never the other way round.

Precedence (lowest to highest): schema defaults < ``--config file.yaml`` < dotlist
overrides (``model.size=d2 train.lr_peak=3e-4``). Unknown keys and bad values
raise ``ConfigError`` naming the key (and the closest valid keys for a typo).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pretrain.config.data import DataConfig
from pretrain.config.eval import EvalConfig
from pretrain.config.fields import ConfigError, doc, validate_dataclass
from pretrain.config.fit import FitConfig
from pretrain.config.model import ModelConfig
from pretrain.config.pyramid import PyramidConfig
from pretrain.config.sample import SampleConfig
from pretrain.config.slurm import SlurmConfig
from pretrain.config.tokenizer import TokenizerConfig
from pretrain.config.train import TrainConfig

__all__ = ["SRDDConfig", "ConfigError", "load_config", "to_yaml", "valid_keys", "home_dir"]


@dataclass
class SRDDConfig:
    run_name: str = doc("default", "outputs go to <SRDD_HOME>/<run_name>/")
    seed: int = doc(0, "global seed (model init, data order)")
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def home_dir() -> Path:
    """Root of all outputs: ``$SRDD_HOME`` or ``./runs``."""
    return Path(os.environ.get("SRDD_HOME", "runs"))


def valid_keys(cls: type = SRDDConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema, e.g. ``model.size``."""
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            keys += valid_keys(type(sub), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _flatten(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


def _check_keys(keys: Iterable[str], source: str) -> None:
    known = valid_keys()
    sections = {k.split(".")[0] for k in known}
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        if not close and key.split(".")[0] in sections:
            section = key.split(".")[0]
            close = difflib.get_close_matches(key, [k for k in known if k.startswith(section + ".")], n=3, cutoff=0.0)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key {key!r} in {source}{hint}")


_YAML_BOOL_WORDS = {"on", "off", "yes", "no", "y", "n"}  # YAML 1.1 (omegaconf's parser) reads these as booleans


def _parse_dotlist(overrides: Sequence[str]) -> DictConfig:
    schema = OmegaConf.structured(SRDDConfig)
    items = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, value = item.partition("=")
        if value.lower() in _YAML_BOOL_WORDS and isinstance(OmegaConf.select(schema, key, default=None), str):
            item = f"{key}='{value}'"  # a string field keeps the word: tokenizer.lpips=off, sample.cfg_schedule=off
        items.append(item)
    return OmegaConf.from_dotlist(items)


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    _check_keys(_flatten(OmegaConf.to_container(layer)), source)
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        value = OmegaConf.select(layer, key, default="?") if key != "?" else "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad value for {key}={value!r} in {source}: {msg}") from None


def load_config(config_file: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> SRDDConfig:
    """Defaults, then a YAML file, then dotlist overrides; validated; returned as dataclasses."""
    cfg: DictConfig = OmegaConf.structured(SRDDConfig)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        file_cfg = OmegaConf.load(path)
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(f"--config {path}: expected a mapping at the top level")
        cfg = _merge(cfg, file_cfg, str(path))
    if overrides:
        cfg = _merge(cfg, _parse_dotlist(overrides), "the command line")
    obj = OmegaConf.to_object(cfg)
    validate_dataclass(obj)
    return obj  # type: ignore[return-value]


def to_yaml(cfg: SRDDConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

