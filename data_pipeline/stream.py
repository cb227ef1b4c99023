"""A deterministic, exactly resumable batch stream over WebDataset shards, in one global sample
order that does not depend on the number of ranks (docs/data.md, "Sample order").

The global order, everything seeded by (seed, epoch):
  1. epoch e: the split's shards are permuted and read in that order;
  2. a shuffle buffer of ``shuffle_buffer`` samples (webdataset's algorithm, driven by our own
     seeded generator, so it replays exactly) gives epoch e's sample sequence;
  3. the epochs follow each other. A position in this stream is (epoch, index in the epoch's
     sequence); ``samples`` counts the samples consumed by all ranks together.
Ranks: with W ranks and a micro-batch of m samples the stream is cut, from where it starts, into
rows of W*m samples, and rank r's batch is slice r*m .. (r+1)*m - 1 of each row. An optimizer
step with A accumulation micro-batches takes A rows, i.e. the next B = W*m*A samples of the
global order, whatever W is: a run resumed on another number of ranks (same B) continues at the
same sample, with no sample of the epoch repeated or skipped. Rows run across epoch ends (no
sample is dropped in infinite mode); in epoch mode (``infinite=False``) each ``iter()`` runs the
rest of the current epoch and the last row may be partial.
Reading: every rank indexes every shard from its tar headers but reads and decodes only its own
samples' payloads (``data_pipeline.files.index_tar``).
Worker split: with ``num_workers`` > 0 every worker replays the (cheap) index stream and loads and
decodes only batches b with b % num_workers == its id; torch's DataLoader collects workers
round-robin, so batches arrive in exactly the single-process order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.files import Sample, StoredSample, index_tar


class RawSample(NamedTuple):
    key: str
    sample: Sample  # extension -> payload
    epoch: int
    index: int  # position in the epoch's sample sequence


Decode = Callable[[list[RawSample]], Any]  # one rank's raw micro-batch -> batch

log = logging.getLogger("srdd.data")


@dataclass(frozen=True)
class StreamSpec:
    shards: tuple[Path, ...]
    batch_size: int  # this rank's micro-batch
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 0
    infinite: bool = True


@dataclass(frozen=True)
class Position:
    """Where the global stream continues: sample ``index`` of epoch ``epoch``; ``samples`` = samples
    consumed before it by all ranks together since the run began (the global consumed-sample count)."""
    epoch: int = 0
    index: int = 0
    samples: int = 0


def epoch_order(spec: StreamSpec, epoch: int) -> Iterator[tuple[str, StoredSample]]:
    """Epoch ``epoch``'s global sample sequence (by reference): permuted shards, then the shuffle buffer."""
    order = np.random.default_rng([spec.seed, epoch]).permutation(len(spec.shards))
    skipped: list[dict] = []  # damaged shards were already counted when they were written

    def in_shard_order() -> Iterator[tuple[str, StoredSample]]:
        for i in order:
            yield from index_tar(spec.shards[i], skipped)

    return shuffled(in_shard_order(), spec.shuffle_buffer, np.random.default_rng([spec.seed, epoch, 1]))


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


def global_order(spec: StreamSpec, start: Position) -> Iterator[tuple[int, int, str, StoredSample]]:
    """(epoch, index, key, sample ref) of the global stream from ``start``: to the end of the start
    epoch in epoch mode, forever in infinite mode."""
    epoch, first = start.epoch, start.index
    while True:
        n = 0
        for index, (key, ref) in enumerate(epoch_order(spec, epoch)):
            n += 1
            if index >= first:
                yield epoch, index, key, ref
        if not spec.infinite:
            return
        if n == 0:  # would spin forever
            raise RuntimeError(f"epoch {epoch} of {len(spec.shards)} shard(s) holds no sample")
        epoch, first = epoch + 1, 0


class SampleRef(NamedTuple):
    epoch: int
    index: int
    key: str
    stored: StoredSample  # payloads not read yet

    def load(self) -> RawSample:
        return RawSample(self.key, self.stored.load(), self.epoch, self.index)


def raw_batches(spec: StreamSpec, start: Position = Position()) -> Iterator[tuple[Position, list[SampleRef]]]:
    """This rank's micro-batches (by reference) from ``start``, each with the position after its
    row: where a resume continues once every rank has taken its batch of that row."""
    m, row = spec.batch_size, spec.batch_size * spec.world_size
    mine = range(spec.rank * m, (spec.rank + 1) * m)
    batch: list[SampleRef] = []
    h = -1
    for h, (epoch, index, key, stored) in enumerate(global_order(spec, start)):
        if h % row == 0 and h:  # sample h opens the next row: the previous one is complete
            if batch:
                yield Position(epoch, index, start.samples + h), batch
            batch = []
        if h % row in mine:
            batch.append(SampleRef(epoch, index, key, stored))
    if batch:  # epoch mode: the stream ended inside (or at the end of) a row
        yield Position(start.epoch + 1, 0, start.samples + h + 1), batch


class _Batches(IterableDataset):
    """(batch number, position after it, its samples' (epoch, index, key), decoded batch) from
    ``start`` on, this worker's share: a worker reads the payloads of its own batches only."""

    def __init__(self, spec: StreamSpec, decode: Decode, start: Position) -> None:
        self.spec, self.decode, self.start = spec, decode, start

    def __iter__(self) -> Iterator[tuple[int, Position, list[tuple[int, int, str]], Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for b, (after, refs) in enumerate(raw_batches(self.spec, self.start)):
            if b % nw == wid:
                yield b, after, [(r.epoch, r.index, r.key) for r in refs], self.decode([r.load() for r in refs])


class ShardStream:
    """Iterable of decoded batches with ``state_dict()`` / ``load_state_dict()``; ``last_samples``
    holds (epoch, index, key) of each sample of the batch yielded last (for sample-coverage records).

    infinite=True: the global stream runs forever. infinite=False: each ``iter()`` runs the rest of
    the current epoch, then the position moves to the next epoch.
    """

    def __init__(self, spec: StreamSpec, decode: Decode, num_workers: int = 0) -> None:
        if not spec.shards:
            raise FileNotFoundError("no shards to stream")
        self.spec, self.decode, self.num_workers = spec, decode, num_workers
        self.position = Position()
        self.last_samples: list[tuple[int, int, str]] = []

    def state_dict(self) -> dict[str, int]:
        """The global position: the same on every rank after an optimizer step, and valid for any
        number of ranks with the same global batch."""
        p = self.position
        return {"epoch": p.epoch, "index": p.index, "samples": p.samples, "seed": self.spec.seed,
                "shuffle_buffer": self.spec.shuffle_buffer}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "index" not in state:  # (epoch, batch) of the former per-rank order: no exact counterpart
            log.warning("loader state %s predates the global sample order: continuing at the start of epoch %d",
                        sorted(state), state["epoch"])
            self.position = Position(int(state["epoch"]), 0, 0)
            return
        for k in ("seed", "shuffle_buffer"):
            if state[k] != getattr(self.spec, k):
                raise ValueError(f"loader state has {k}={state[k]} but this loader has {getattr(self.spec, k)}: "
                                 "the sample order would differ from the run's")
        self.position = Position(int(state["epoch"]), int(state["index"]), int(state["samples"]))

    def _batches(self) -> Iterator[tuple[int, Position, list[tuple[int, int, str]], Any]]:
        ds = _Batches(self.spec, self.decode, self.position)
        if self.num_workers == 0:
            return iter(ds)
        # A DataLoader with workers draws its base seed from the generator it is given, else from the
        # global torch RNG; its own generator keeps the trainer's RNG stream (class-dropout draws)
        # identical whether the iterator is created at step 0 or after a resume.
        seed = torch.Generator().manual_seed(self.spec.seed + self.position.epoch)
        return iter(DataLoader(ds, batch_size=None, num_workers=self.num_workers, multiprocessing_context="fork",
                               generator=seed))

    def __iter__(self) -> Iterator[Any]:
        start = self.position
        for expected, (b, after, samples, batch) in enumerate(self._batches()):
            assert b == expected, f"batch {b} arrived at position {expected}"
            self.position, self.last_samples = after, samples
            yield batch
        if not self.spec.infinite:
            self.position = Position(start.epoch + 1, 0, self.position.samples)


def split_shards(directory: Path, split: str) -> tuple[Path, ...]:
    return tuple(sorted(Path(directory).glob(f"{split}-*.tar")))


def stack_labels(raw: Sequence[RawSample]) -> torch.Tensor:
    return torch.tensor([int(r.sample["cls"]) for r in raw], dtype=torch.long)
