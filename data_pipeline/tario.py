"""WebDataset tar files: deterministic writing and fault-tolerant reading.

A WebDataset shard is a plain tar whose members ``{key}.{ext}`` are grouped into samples by
key. Written here byte-reproducibly (fixed mtime/uid/gid/mode, no user names, members in
sample order, USTAR headers) so a killed and rerun job produces identical bytes. Reading
goes through webdataset's tar iterator; a truncated tar yields its complete samples and is
reported as one skipped input instead of an exception.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from webdataset.tariterators import group_by_keys

from pretrain.outputs import atomic_path

Sample = dict[str, bytes]  # extension -> payload, e.g. {"png": ..., "cls": b"3"}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_tar(path: str | os.PathLike, samples: Iterable[tuple[str, Sample]]) -> int:
    """Write samples atomically (temp name + rename); returns the number of samples."""
    n = 0
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, sample in samples:
                for ext in sorted(sample):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(sample[ext]), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(sample[ext]))
                n += 1
    return n


def _members(path: str | os.PathLike) -> Iterator[dict]:
    """Regular files of a tar stream as webdataset file samples. tarfile's stream mode takes a
    member cut short, or a header cut short, for the end of the archive; here both are errors:
    the archive must end with its two zero blocks."""
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as stream:
        for info in stream:
            if not info.isreg():
                continue
            data = stream.extractfile(info).read()
            if len(data) != info.size:
                raise tarfile.ReadError(f"{info.name}: {len(data)} of {info.size} bytes (unexpected end of data)")
            yield {"fname": info.name, "data": data, "__url__": str(path)}
        end = stream.offset
        f.seek(end)
        if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
            raise tarfile.ReadError(f"no end-of-archive marker at byte {end} (truncated header)")


def read_tar(path: str | os.PathLike, skipped: list[dict]) -> Iterator[tuple[str, Sample]]:
    """(key, sample) pairs of one shard, grouped by webdataset's ``group_by_keys``. A damaged
    tar ends the shard at the damage (the sample being read is dropped); the damage is appended
    to ``skipped`` as ``{"input": name, "reason": "truncated tar", "detail": ...}``."""
    try:
        for sample in group_by_keys(_members(path)):
            key = sample.pop("__key__")
            yield key, {k: v for k, v in sample.items() if not k.startswith("__")}
    except (tarfile.TarError, EOFError, OSError) as exn:
        skipped.append({"input": Path(path).name, "reason": "truncated tar", "detail": str(exn)[:200]})
