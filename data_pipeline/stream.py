"""A deterministic, exactly resumable batch stream over WebDataset shards.

Order of one rank in epoch e (everything seeded by (seed, e[, rank])):
  1. the split's shards are permuted;
  2. node split: with >= world_size shards, rank r reads shards r, r+W, ...; with fewer, every
     rank reads all shards and keeps samples r, r+W, ... (tiny datasets still feed every rank);
  3. a shuffle buffer of ``shuffle_buffer`` samples (webdataset's algorithm, driven by our own
     seeded generator, so it replays exactly);
  4. consecutive batches of ``batch_size`` (the last partial batch is dropped in infinite mode).
Worker split: with ``num_workers`` > 0 every worker replays the cheap raw-byte stream and
decodes only batches b with (b - start) % num_workers == its id; torch's DataLoader collects
workers round-robin, so batches arrive in exactly the order of the single-process stream.
Position = (epoch, batches yielded in that epoch): resuming replays the raw stream up to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.files import Sample, read_tar

Decode = Callable[[list[tuple[str, Sample]], int], Any]  # (raw batch, epoch) -> batch


@dataclass(frozen=True)
class StreamSpec:
    shards: tuple[Path, ...]
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 0
    infinite: bool = True


def rank_samples(spec: StreamSpec, epoch: int) -> Iterator[tuple[str, Sample]]:
    order = np.random.default_rng([spec.seed, epoch]).permutation(len(spec.shards))
    shards = [spec.shards[i] for i in order]
    by_shard = len(shards) >= spec.world_size
    if by_shard:
        shards = shards[spec.rank::spec.world_size]
    skipped: list[dict] = []  # damaged pyramid shards were already counted when they were written
    n = 0
    for path in shards:
        for key, sample in read_tar(path, skipped):
            if by_shard or n % spec.world_size == spec.rank:
                yield key, sample
            n += 1


def shuffled(samples: Iterator[Any], buffer: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffer shuffle: keep ``buffer`` samples, emit a random one as each new one arrives."""
    if buffer <= 1:
        yield from samples
        return
    buf: list[Any] = []
    for s in samples:
        if len(buf) < buffer:
            buf.append(s)
            continue
        j = int(rng.integers(len(buf)))
        buf[j], s = s, buf[j]
        yield s
    for j in rng.permutation(len(buf)):
        yield buf[j]


def raw_batches(spec: StreamSpec, epoch: int) -> Iterator[list[tuple[str, Sample]]]:
    rng = np.random.default_rng([spec.seed, epoch, spec.rank, 1])
    batch: list[tuple[str, Sample]] = []
    for s in shuffled(rank_samples(spec, epoch), spec.shuffle_buffer, rng):
        batch.append(s)
        if len(batch) == spec.batch_size:
            yield batch
            batch = []
    if batch and not spec.infinite:
        yield batch


class _EpochBatches(IterableDataset):
    """Decoded batches (index, batch) of one epoch from batch ``start`` on, this worker's share."""

    def __init__(self, spec: StreamSpec, decode: Decode, epoch: int, start: int) -> None:
        self.spec, self.decode, self.epoch, self.start = spec, decode, epoch, start

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for b, raw in enumerate(raw_batches(self.spec, self.epoch)):
            if b >= self.start and (b - self.start) % nw == wid:
                yield b, self.decode(raw, self.epoch)


class ShardStream:
    """Iterable of decoded batches with ``state_dict()`` / ``load_state_dict()``.

    infinite=True: epochs follow each other forever. infinite=False: each ``iter()`` runs the
    rest of the current epoch, then the position moves to the next epoch.
    """

    def __init__(self, spec: StreamSpec, decode: Decode, num_workers: int = 0) -> None:
        if not spec.shards:
            raise FileNotFoundError("no shards to stream")
        self.spec, self.decode, self.num_workers = spec, decode, num_workers
        self.epoch, self.batch = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.spec.seed, "rank": self.spec.rank,
                "world_size": self.spec.world_size, "batch_size": self.spec.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for k in ("seed", "world_size", "batch_size"):
            if k in state and state[k] != getattr(self.spec, k):
                raise ValueError(f"loader state has {k}={state[k]} but this loader has {getattr(self.spec, k)}: "
                                 "an exact resume needs the same seed, world size and batch size")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def _epoch(self) -> Iterator[tuple[int, Any]]:
        ds = _EpochBatches(self.spec, self.decode, self.epoch, self.batch)
        if self.num_workers == 0:
            return iter(ds)
        # A DataLoader with workers draws its base seed from the generator it is given, else from the
        # global torch RNG; its own generator keeps the trainer's RNG stream (class-dropout draws)
        # identical whether the iterator is created at step 0 or after a resume.
        seed = torch.Generator().manual_seed(self.spec.seed + self.epoch)
        return iter(DataLoader(ds, batch_size=None, num_workers=self.num_workers, multiprocessing_context="fork",
                               generator=seed))

    def __iter__(self) -> Iterator[Any]:
        while True:
            produced = False
            for b, batch in self._epoch():
                assert b == self.batch, f"batch {b} arrived at position {self.batch}"
                self.batch += 1
                produced = True
                yield batch
            if not produced and self.batch == 0 and self.spec.infinite:  # would spin forever
                raise RuntimeError(f"epoch {self.epoch} of {len(self.spec.shards)} shard(s) has no full batch of "
                                   f"{self.spec.batch_size} for rank {self.spec.rank}/{self.spec.world_size}")
            self.epoch, self.batch = self.epoch + 1, 0
            if not self.spec.infinite:
                return


def split_shards(directory: Path, split: str) -> tuple[Path, ...]:
    return tuple(sorted(Path(directory).glob(f"{split}-*.tar")))


def stack_labels(raw: Sequence[tuple[str, Sample]]) -> torch.Tensor:
    return torch.tensor([int(s["cls"]) for _, s in raw], dtype=torch.long)
