"""avatar.core.compiled: a compile in one thread never meets a compiled call in another (the failure of the first
ray-mode run on a GPU: "Detected that you are using FX to symbolically trace a dynamo-optimized function")."""
from __future__ import annotations

import threading

import torch

from avatar.core.compiled import compiled


def _slow_backend(entered: threading.Event, release: threading.Event):
    """A torch.compile backend that traces with torch.fx, as inductor does, and waits inside the trace: torch.fx's
    process-wide 'tracing now' flag stays set until `release`. torch 2.13 also marks the whole compile session
    (torch.compiler.is_compiling() is then true in every thread, and the check that fails stays quiet); torch 2.11,
    the GPU machine's, did not: the backend clears that mark to run as there."""
    class Waiting(torch.nn.Module):
        def forward(self, x):
            entered.set()
            release.wait(30)
            return x

    def backend(gm, example_inputs):
        marked = getattr(torch.compiler, "_is_compiling_flag", False)
        torch.compiler._is_compiling_flag = False
        try:
            torch.fx.symbolic_trace(Waiting())
        finally:
            torch.compiler._is_compiling_flag = marked
        return gm.forward
    return backend


def _call_during_compile(compile_fn, wait_s: float) -> tuple[bool, dict]:
    """A network compiled by compile_fn is called from one thread while another thread's compile holds torch.fx's
    tracing flag; the caller gets wait_s to finish before the compile is let go. -> (caller still waiting then,
    {"out": its result} or {"error": its message})."""
    torch._dynamo.reset()
    entered, release = threading.Event(), threading.Event()
    ready = compile_fn(lambda x: x + 1, backend="eager")
    ready(torch.ones(2))  # compiled before the other thread starts compiling
    slow = compile_fn(lambda x: x * 3, backend=_slow_backend(entered, release))
    compiling = threading.Thread(target=slow, args=(torch.ones(2),))
    compiling.start()
    result: dict = {}

    def call() -> None:
        try:
            result["out"] = ready(torch.ones(2))
        except RuntimeError as e:  # what torch.compile alone does here
            result["error"] = str(e)

    caller = threading.Thread(target=call)
    try:
        assert entered.wait(30)
        caller.start()
        caller.join(wait_s)
        waiting = caller.is_alive()
    finally:
        release.set()
        compiling.join(30)
    caller.join(30)
    return waiting, result


def test_a_compiled_call_waits_for_a_compile_in_another_thread():
    waiting, result = _call_during_compile(compiled, 0.5)
    assert waiting, result  # it waited for the compile (a caller that has not even started yet is waiting too)
    assert torch.equal(result["out"], torch.full((2,), 2.0))


def test_without_the_lock_the_same_call_fails():
    """The test above can fail: with plain torch.compile the call fails at once, as on the H200."""
    waiting, result = _call_during_compile(torch.compile, 30)
    assert not waiting and "symbolically trace a dynamo-optimized function" in result.get("error", ""), result


def test_eat_tf32_block_leaves_compiled_graphs_valid_for_other_threads():
    """The EAT renderer's TF32 block must not flip a switch that torch.compile guards on (cuBLAS' TF32): a flip in
    one thread makes another thread's compiled network recompile (and, with the lock above, wait for it). Fails when
    the block covers matmuls."""
    from avatar.head.eat.runtime import tf32_math

    torch._dynamo.reset()
    double = torch.compile(lambda x: x * 2 + 1, backend="eager")
    x = torch.ones(3)
    double(x)
    with torch.compiler.set_stance("fail_on_recompile"), tf32_math(True):
        assert torch.equal(double(x), torch.full((3,), 3.0))
