"""Frame batches joined into bigger ones, for the GPU benchmarks (bench_render_gpu, bench_serve_gpu); numpy only
at import, so the Serve benchmark's smoke run works without torch."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def joined(batches: Iterable, size: int) -> Iterator:
    """Generator batches (host arrays or torch tensors) joined into batches of `size` frames (the last may be
    shorter)."""
    buf: list = []
    held = 0
    for frames in batches:
        buf.append(frames)
        held += len(frames)
        if held >= size:
            yield _concat(buf)
            buf, held = [], 0
    if buf:
        yield _concat(buf)


def _concat(buf: list):
    if len(buf) == 1:
        return buf[0]
    if isinstance(buf[0], np.ndarray):
        return np.concatenate(buf)
    import torch

    return torch.cat(buf)
