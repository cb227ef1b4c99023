"""The platform's one file I/O module: atomic writes, JSONL records, sha256, WebDataset tars.

Atomic writes: every output is written to a temporary name in its own directory, fsynced and
renamed (README "Outputs"), so a killed job never leaves a half-written file that a rerun
would trust. JSONL: one record per line, flushed and fsynced per record; a reader ignores a
torn last line. ``pretrain.outputs`` (the run directory layout) re-exports the write helpers
for every stage.

WebDataset tars (docs/data.md): a shard is a plain tar whose members ``{key}.{ext}`` are
grouped into samples by key. Written here byte-reproducibly (fixed mtime/uid/gid/mode, no user
names, members in sample order, USTAR headers) so a killed and rerun job produces identical
bytes. Reading goes through webdataset's tar iterator; a truncated tar yields its complete
samples and is reported as one skipped input instead of an exception.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

Sample = dict[str, bytes]  # extension -> payload, e.g. {"png": ..., "cls": b"3"}

_UMASK = os.umask(0)
os.umask(_UMASK)


# ---- atomic writes -------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual umask mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---- JSONL records -------------------------------------------------------------------------
def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it (metrics survive a SIGKILL up to the last record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file, ignoring a torn last line left by a killed writer."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---- hashing -------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- WebDataset tars -----------------------------------------------------------------------
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


def tar_members(path: str | os.PathLike, read: bool = True,
                with_dirs: bool = False) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """(member, payload) of every regular file (and directory, payload None, if ``with_dirs``) of a tar,
    plain or compressed (gzip/bz2/xz), streamed in archive order without unpacking; ``read=False``
    skips the payloads (None) of a plain tar, whose members a reader can then fetch by ``info.offset_data``. tarfile's stream mode takes a member cut
    short, or a header cut short, for the end of the archive; here both raise ``tarfile.ReadError``:
    a plain tar must end with its two zero blocks (a compressed one fails in its decompressor)."""
    compressed = _is_compressed(path)
    with open(path, "rb") as f:
        with tarfile.open(fileobj=f, mode="r|*") as stream:
            for info in stream:
                if with_dirs and info.isdir():
                    yield info, None
                    continue
                if not info.isreg():
                    continue
                if not (read or compressed):
                    yield info, None
                    continue
                data = stream.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"{info.name}: {len(data)} of {info.size} bytes (unexpected end of data)")
                yield info, data
            if compressed:
                return
            end = stream.offset
            f.seek(end)
            if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
                raise tarfile.ReadError(f"no end-of-archive marker at byte {end} (truncated header)")


def read_member(path: str | os.PathLike, offset: int, size: int) -> bytes:
    """One member's payload of a plain tar, by the offset ``tar_members`` reported."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise tarfile.ReadError(f"{path}: {len(data)} of {size} bytes at offset {offset} (truncated)")
    return data


def _is_compressed(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(6)[:3] in (b"\x1f\x8b\x08", b"BZh", b"\xfd7zX")


def _indexed_members(path: str | os.PathLike) -> Iterator[dict]:
    """Regular files of a plain tar as webdataset file samples whose data is (offset, size): the
    headers are read and the payloads seeked over (random-access mode), so indexing a shard reads
    a 512-byte header per member. Damage raises ``tarfile.ReadError``: a payload running past the
    end of the file, or no end-of-archive marker where the members end (a truncated header)."""
    file_size = os.path.getsize(path)
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isreg():
                continue
            if info.offset_data + info.size > file_size:
                raise tarfile.ReadError(f"{info.name}: payload runs past the end of the file (truncated)")
            yield {"fname": info.name, "data": (info.offset_data, info.size), "__url__": str(path)}
        end = tar.offset
    with open(path, "rb") as f:
        f.seek(end)
        if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
            raise tarfile.ReadError(f"no end-of-archive marker at byte {end} (truncated header)")


class StoredSample:
    """One sample of a plain tar by reference: ``load()`` reads its members' payloads."""

    __slots__ = ("path", "spans")

    def __init__(self, path: str, spans: dict[str, tuple[int, int]]):
        self.path, self.spans = path, spans

    def load(self) -> Sample:
        with open(self.path, "rb") as f:
            out = {}
            for ext, (offset, size) in self.spans.items():
                f.seek(offset)
                out[ext] = f.read(size)
                if len(out[ext]) != size:
                    raise tarfile.ReadError(f"{self.path}: {len(out[ext])} of {size} bytes of .{ext} (truncated)")
        return out


def index_tar(path: str | os.PathLike, skipped: list[dict]) -> Iterator[tuple[str, StoredSample]]:
    """(key, StoredSample) pairs of one plain-tar shard, in archive order, from the headers alone: a
    reader that keeps only some samples (one rank of many) reads only their payloads. Damage is
    handled as in ``read_tar``: the shard ends there, the sample being read is dropped, the damage
    is appended to ``skipped``. Compressed tars cannot be indexed (they cannot seek): ValueError."""
    from webdataset.tariterators import group_by_keys

    if _is_compressed(path):
        raise ValueError(f"{path}: a compressed tar; shards are plain tars (srdd shards / srdd pyramids write them)")
    try:
        for sample in group_by_keys(_indexed_members(path)):
            key = sample.pop("__key__")
            yield key, StoredSample(str(path), {k: v for k, v in sample.items() if not k.startswith("__")})
    except (tarfile.TarError, EOFError, OSError) as exn:
        skipped.append({"input": Path(path).name, "reason": "truncated tar", "detail": str(exn)[:200]})


def _members(path: str | os.PathLike) -> Iterator[dict]:
    """Regular files of a tar stream as webdataset file samples."""
    for info, data in tar_members(path):
        yield {"fname": info.name, "data": data, "__url__": str(path)}


def read_tar(path: str | os.PathLike, skipped: list[dict]) -> Iterator[tuple[str, Sample]]:
    """(key, sample) pairs of one shard, grouped by webdataset's ``group_by_keys``. A damaged
    tar ends the shard at the damage (the sample being read is dropped); the damage is appended
    to ``skipped`` as ``{"input": name, "reason": "truncated tar", "detail": ...}``."""
    from webdataset.tariterators import group_by_keys  # imported here: every stage imports this module

    try:
        for sample in group_by_keys(_members(path)):
            key = sample.pop("__key__")
            yield key, {k: v for k, v in sample.items() if not k.startswith("__")}
    except (tarfile.TarError, EOFError, OSError) as exn:
        skipped.append({"input": Path(path).name, "reason": "truncated tar", "detail": str(exn)[:200]})
