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


def test_a_compiled_call_waits_for_a_compile_in_another_thread(compile_fn=compiled):
    torch._dynamo.reset()
    entered, release = threading.Event(), threading.Event()
    ready = compile_fn(lambda x: x + 1, backend="eager")
    ready(torch.ones(2))  # compiled before the other thread starts compiling
    slow = compile_fn(lambda x: x * 3, backend=_slow_backend(entered, release))
    compiling = threading.Thread(target=slow, args=(torch.ones(2),))
    compiling.start()
    try:
        assert entered.wait(30)
        result: dict = {}

        def call() -> None:
            try:
                result["out"] = ready(torch.ones(2))
            except RuntimeError as e:  # what torch.compile alone does here
                result["error"] = str(e)

        caller = threading.Thread(target=call)
        caller.start()
        caller.join(0.5)
        assert caller.is_alive(), result  # waits for the compile instead of failing
    finally:
        release.set()
        compiling.join(30)
    caller.join(30)
    assert torch.equal(result["out"], torch.full((2,), 2.0))


def test_without_the_lock_the_same_call_fails():
    """The test above can fail: plain torch.compile gives the error this module exists for."""
    try:
        test_a_compiled_call_waits_for_a_compile_in_another_thread(torch.compile)
    except AssertionError as e:
        assert "symbolically trace a dynamo-optimized function" in str(e)
    else:
        raise AssertionError("plain torch.compile did not fail: the lock test proves nothing")
