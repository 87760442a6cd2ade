"""A turn's own cancel token, linked to the caller's: the turn can stop itself (a failing stage, a consumer that
stops reading) without cancelling the caller's token, and a cancelled caller's token stops the turn."""
from __future__ import annotations

from avatar.core.cancel import CancelToken

POLL_S = 0.02


class LinkedToken(CancelToken):
    """Cancelled when cancel() is called on it or when its parent is cancelled (the parent's reason then)."""

    def __init__(self, parent: CancelToken) -> None:
        super().__init__()
        self.parent = parent

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self.parent.is_set()

    def is_set(self) -> bool:
        return self.cancelled

    def check(self) -> None:
        if self.parent.is_set() and not self._event.is_set():
            self.cancel(self.parent.reason)
        super().check()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Polls both tokens (a threading.Event cannot wait on two)."""
        remaining = timeout_s
        while not self.cancelled and (remaining is None or remaining > 0):
            self._event.wait(POLL_S if remaining is None else min(POLL_S, remaining))
            remaining = None if remaining is None else remaining - POLL_S
        return self.cancelled

    @property
    def why(self) -> str:
        """The reason of whichever was cancelled first as far as this token saw it."""
        return self.reason or self.parent.reason
