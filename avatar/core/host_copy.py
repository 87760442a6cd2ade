"""Batches of GPU results -> host arrays without stalling the GPU.

A plain `.cpu()` waits for everything queued on the stream and then copies into pageable memory while the GPU has
nothing to do. `host_batches` copies each CUDA batch on a side stream into pinned memory and hands batch i to the
caller only after batch i+1 has been asked for, so the next batch's work is already queued while batch i is copied
and used. CPU tensors pass through unchanged (in order).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch


def host_batches(tensors: Iterable["torch.Tensor"]) -> Iterator[np.ndarray]:
    """Yield every tensor of `tensors` as a numpy array, in order (see the module's doc)."""
    pending = None
    streams: dict = {}
    for t in tensors:
        if t.device.type != "cuda":
            if pending is not None:
                yield _finish(pending)
                pending = None
            yield t.numpy()
            continue
        started = _start_copy(t, streams)
        if pending is not None:
            yield _finish(pending)
        pending = started
    if pending is not None:
        yield _finish(pending)


def _start_copy(t: "torch.Tensor", streams: dict) -> tuple["torch.Tensor", "torch.cuda.Event"]:
    """Queue t's copy into pinned host memory on a side stream that first waits for t's producer."""
    import torch

    stream = streams.get(t.device)
    if stream is None:
        stream = streams[t.device] = torch.cuda.Stream(t.device)
    stream.wait_stream(torch.cuda.current_stream(t.device))
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    with torch.cuda.stream(stream):
        host.copy_(t, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    t.record_stream(stream)  # t's memory is not reused by the main stream before the copy has read it
    return host, done


def _finish(pending: tuple["torch.Tensor", "torch.cuda.Event"]) -> np.ndarray:
    host, done = pending
    done.synchronize()
    return host.numpy()
