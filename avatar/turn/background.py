"""Runs one blocking call (a transcription) on its own thread, so that the caller's generator can be closed while it
runs: closing cancels the call's token and the call stops at its next check, instead of holding its model (and the
lock around it) until the end (a Gradio request that is cancelled closes its generator)."""
from __future__ import annotations

import threading
from typing import Callable, Iterator, TypeVar

from avatar.core.cancel import CancelToken

T = TypeVar("T")
POLL_S = 0.2  # the caller's generator yields this often while the call runs (Gradio can close it only then)


def run_cancellable(fn: Callable[[CancelToken], T], poll_s: float = POLL_S) -> Iterator[T | None]:
    """Yields None every poll_s while fn(token) runs, then its result (or raises its error). Closing the generator
    cancels the token."""
    token, done, box = CancelToken(), threading.Event(), {}

    def call() -> None:
        try:
            box["result"] = fn(token)
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
            box["error"] = e
        done.set()

    threading.Thread(target=call, name="turn-call", daemon=True).start()
    try:
        while not done.wait(poll_s):
            yield None
    finally:
        if not done.is_set():
            token.cancel("closed")
    if "error" in box:
        raise box["error"]
    yield box["result"]
