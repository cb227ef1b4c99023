"""Generate the README's config reference from the schema (so the docs cannot drift).

``python -m pretrain.config.reference --write README.md`` rewrites the block
between the ``config-reference`` markers; a test checks it is up to date.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path

from pretrain.config import SRDDConfig

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _type_name(tp: object) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return "optional " + _type_name(next(a for a in args if a is not type(None)))
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(args[0])}]"
    return getattr(tp, "__name__", str(tp))


def _allowed(meta: typing.Mapping[str, object]) -> str:
    if meta.get("choices") is not None:
        return " \\| ".join(str(c) for c in meta["choices"])  # type: ignore[union-attr]
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return ""
    return f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"


def markdown() -> str:
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
                continue
            help_text = str(f.metadata.get("help", "")).replace("|", "\\|")
            shown = repr(default).replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | {_type_name(hints[f.name])} | `{shown}` | {_allowed(f.metadata)} | {help_text} |")

    walk(SRDDConfig, "")
    return "\n".join(rows)


def embed(text: str) -> str:
    block = f"{START}\n{markdown()}\n{END}"
    if START not in text:
        raise SystemExit(f"no {START} marker in the target file")
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="FILE", help="rewrite the marked block of FILE in place")
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(embed(path.read_text()))
    else:
        sys.stdout.write(markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
