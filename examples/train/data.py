"""Byte-token data: the prepared corpus (prepare_data.py), batches in a fixed order, masked-LM corruption.

Every run with the same seed sees the same batches and the same masks, whatever its speed: batch i is a
pure function of (seed, i), and the validation set (windows and masks) is fixed by the seed alone.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from model import MASK_ID

IGNORE = -100  # cross_entropy's ignore_index
MASK_RATE = 0.15  # BERT: of the selected positions, 80 % become [MASK], 10 % a random byte, 10 % stay


class Corpus:
    def __init__(self, train, val, source):
        self.train, self.val, self.source = train, val, source  # uint8 numpy arrays

    @classmethod
    def from_dir(cls, path):
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"{mpath} is missing: prepare the corpus (examples/train/prepare_data.py)")
        manifest = json.loads(mpath.read_text())

        def load(name):  # checked against the manifest: the files travel between machines
            raw = (path / name).read_bytes()
            if hashlib.sha256(raw).hexdigest() != manifest["files"][name]["sha256"]:
                raise ValueError(f"{path / name} does not match its manifest's SHA-256 (corrupt or partial copy)")
            return np.frombuffer(raw, dtype=np.uint8)

        return cls(load("train.bin"), load("val.bin"), {"dir": str(path), **manifest})

    @classmethod
    def from_files(cls, paths, val_every=10):
        """A small corpus from text files (the smoke test uses the repository's docs): every val_every-th
        file is validation."""
        paths = sorted(Path(p) for p in paths)
        parts = {"train": [], "val": []}
        for i, p in enumerate(paths):
            parts["val" if i % val_every == val_every - 1 else "train"].append(p.read_bytes())
        arr = lambda xs: np.frombuffer(b"\0".join(xs) + b"\0", dtype=np.uint8)  # noqa: E731
        return cls(arr(parts["train"]), arr(parts["val"]), {"files": [str(p) for p in paths]})


def _windows(data, starts, seq_len):
    idx = starts[:, None] + np.arange(seq_len)[None, :]
    return torch.from_numpy(data[idx].astype(np.int64))


def train_batch(corpus, step, batch_size, seq_len, seed):
    """Batch number `step`: random windows of the training stream."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(corpus.train) - seq_len, size=batch_size)
    return _windows(corpus.train, starts, seq_len)


def val_batches(corpus, n_tokens, batch_size, seq_len):
    """Consecutive non-overlapping windows from the start of the validation stream (at most n_tokens)."""
    n_seq = min(n_tokens, len(corpus.val) - 1) // seq_len
    if n_seq == 0:
        raise ValueError(f"the validation split ({len(corpus.val)} bytes) is shorter than one sequence")
    starts = np.arange(n_seq) * seq_len
    return [_windows(corpus.val, starts[i:i + batch_size], seq_len) for i in range(0, n_seq, batch_size)]


def mask_tokens(ids, generator):
    """Masked-LM corruption: (inputs, targets, selected) with selected [B, N] bool."""
    u = torch.rand(ids.shape, generator=generator)
    select = u < MASK_RATE
    r = torch.rand(ids.shape, generator=generator)
    rand_bytes = torch.randint(0, 256, ids.shape, generator=generator)
    inputs = torch.where(select & (r < 0.8), torch.full_like(ids, MASK_ID), ids)
    inputs = torch.where(select & (r >= 0.8) & (r < 0.9), rand_bytes, inputs)
    return inputs, ids, select


def make_task_batch(task, ids, seed, index):
    """(inputs, targets, selected) for the task; masks drawn from (seed, index) so runs agree. selected is
    None for the causal task, whose unscored last position has target IGNORE."""
    if task == "mlm":
        g = torch.Generator().manual_seed((seed * 1_000_003 + index) % 2**63)
        return mask_tokens(ids, g)
    if task == "clm":  # next-byte prediction: the last position has no target and is not scored
        targets = torch.roll(ids, -1, dims=1)
        targets[:, -1] = IGNORE
        return ids, targets, None
    raise ValueError(f"unknown task '{task}' (mlm or clm)")
