"""torch.compile for networks that several threads call (local mode's sessions, ray mode's clips in one replica).

torch.fx marks "tracing now" in one process-wide flag, and a compiled function refuses to run while it is set
("Detected that you are using FX to symbolically trace a dynamo-optimized function"): so while one thread compiles
(a first call or a recompile) any other thread that enters a compiled network fails, and two compiles at once can
leave the flag set for good (torch 2.11, the GPU image's; 2.13 marks the whole compile session and stays quiet).
`compiled` wraps torch.compile's result in one process-wide lock, so a compile never overlaps another compiled
call. The lock covers the call only, which on a GPU queues the kernels and returns: the GPU still works on one
thread's batch while another thread queues its own. A compile holds the lock for its whole length (minutes at
start-up), so every session waits for a recompile: the networks are compiled for one padded shape each and warmed
up at start-up, so none is expected while serving (`TORCH_LOGS=recompiles` shows any, with its reason).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

_LOCK = threading.RLock()  # re-entrant: a compiled network may call another one


def compiled(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """torch.compile(fn, **options), every call under the process-wide lock."""
    import torch

    network = torch.compile(fn, **options)

    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return network(*args, **kwargs)
    return call
