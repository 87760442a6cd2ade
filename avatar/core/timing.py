"""Small measuring helpers shared by the stages' bench functions."""
from __future__ import annotations

import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeats: int = 2) -> tuple[Any, float, float]:
    """Runs fn `repeats` times (>= 1) -> (last result, best wall seconds, best CPU seconds of this process).

    CPU time (all threads) barely moves when other processes share the machine, unlike wall time."""
    walls, cpus, result = [], [], None
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return result, min(walls), min(cpus)


def common_prefix(a, b) -> int:
    """Length of the common prefix of two sequences (token ids shared with a cached prompt)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
