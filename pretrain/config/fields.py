"""Config machinery shared by every component: choices/range metadata, validation, errors.

Each component declares its own section as a dataclass; a field may carry
``metadata={"choices": (...)}`` or ``metadata={"min": x, "max": y}`` and the
section may define ``validate(self, prefix)`` for cross-field rules. Errors name
the offending key (``ConfigError``), so a typo in a long SLURM job fails in the
first second with a message a user can act on.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key."""


def choice(default: Any, choices: Iterable[Any], help: str = "") -> Any:
    """A field whose value must be one of ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), "help": help})


def bounded(default: Any, min: float | None = None, max: float | None = None, help: str = "") -> Any:
    """A numeric field constrained to ``[min, max]`` (either bound optional)."""
    return dataclasses.field(default=default, metadata={"min": min, "max": max, "help": help})


def doc(default: Any, help: str) -> Any:
    """A plain field with a help string (shown in the generated config reference)."""
    if isinstance(default, (list, dict, tuple)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def listing(default: Iterable[Any], help: str = "") -> Any:
    """A list-valued field (omegaconf needs a factory for mutable defaults)."""
    value = list(default)
    return dataclasses.field(default_factory=lambda: list(value), metadata={"help": help})


def validate_dataclass(obj: Any, prefix: str = "") -> None:
    """Check choices/ranges of every field recursively, then each section's own ``validate``."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate_dataclass(value, prefix=f"{key}.")
            continue
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(choices)}")
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if value is not None and lo is not None and value < lo:
            raise ConfigError(f"{key}={value!r} is below its minimum {lo}")
        if value is not None and hi is not None and value > hi:
            raise ConfigError(f"{key}={value!r} is above its maximum {hi}")
    own = getattr(obj, "validate", None)
    if callable(own):
        own(prefix)
