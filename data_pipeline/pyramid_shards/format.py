"""Pyramid shard samples (format ``srdd-pyramids-v1``), shared by the writer and the loader.

One sample per image, three tar members:
  ``{key}.cls``         class index as ASCII text
  ``{key}.tokens.npy``  F x L integer array (int16 when V <= 32768, else int32): row 0 the
                        image's pyramid, row 1 its horizontal flip's (F = 2 only with data.flip);
                        each row is the K scales' token maps concatenated in scale order,
                        row-major, so scale k is columns [sum_{j<k} pn_j^2, sum_{j<=k} pn_j^2)
  ``{key}.json``        {"crop": [x, y], "source": <the image shard's {key}.json>}
"""
from __future__ import annotations

import io
import json
from typing import Sequence

import numpy as np
import torch

from data_pipeline.files import Sample

FORMAT = "srdd-pyramids-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= 32768 else np.dtype(np.int32)


def pack(label: int, tokens_FL: np.ndarray, meta: dict) -> Sample:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(tokens_FL), allow_pickle=False)
    return {"cls": str(label).encode(), "tokens.npy": buf.getvalue(),
            "json": json.dumps(meta, sort_keys=True).encode()}


def unpack_tokens(sample: Sample) -> np.ndarray:
    return np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)


def split_scales(tokens_BL: torch.Tensor, patch_nums: Sequence[int]) -> list[torch.Tensor]:
    """B x L -> [B x pn^2 for pn in patch_nums] (long)."""
    return list(tokens_BL.long().split([pn * pn for pn in patch_nums], dim=1))
