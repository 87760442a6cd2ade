"""One cancellation token per turn: every stage checks it between chunks of its work (a Whisper segment, a chat token,
a sentence of speech, a batch of frames), so Stop, a new turn or an interruption frees all of them within a chunk."""
from __future__ import annotations

import threading
from typing import Callable

from .errors import Cancelled
from .types import ProgressFn


class CancelToken:
    """A thread-safe flag with a reason. Also has is_set() so it can be passed where a threading.Event is expected."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "stopped") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raises Cancelled when the token was cancelled: call it between chunks of work."""
        if self._event.is_set():
            raise Cancelled(f"the turn was {self.reason}")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleeps until cancelled or timeout_s has passed; True when cancelled (an interruptible sleep)."""
        return self._event.wait(timeout_s)


class _Never(CancelToken):
    def cancel(self, reason: str = "stopped") -> None:  # shared by every caller without a token: must stay unset
        raise RuntimeError("NEVER is shared; make a CancelToken() to cancel work")


NEVER = _Never()  # the default for callers without a token: never cancelled


def stoppable(progress: ProgressFn | None, cancel, error: Callable[[], Exception]) -> ProgressFn:
    """progress, checking `cancel` (anything with is_set()) first: long work reports after every frame batch, so a
    set cancel stops it there by raising error() (the video writers remove their unfinished file)."""
    def report(fraction: float | None, text: str) -> None:
        if cancel is not None and cancel.is_set():
            raise error()
        if progress is not None:
            progress(fraction, text)

    return report
