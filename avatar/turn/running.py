"""The turn each session is running, so that Stop, a new turn or an interruption can end it and know what of the
reply was already heard (the UI's Stop, the hands-free mode's barge-in)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from avatar.core.cancel import CancelToken

STOP_WAIT_S = 10.0  # how long Stop waits for a turn's workers to end (they check the token between chunks)


@dataclass
class TurnHandle:
    """One running turn: its cancel token, the chunks handed to the player so far, and whether it has ended."""

    cancel: CancelToken = field(default_factory=CancelToken)
    heard: list[str] = field(default_factory=list)  # chunk texts, in order
    paths: list[Path] = field(default_factory=list)  # chunk MP4s, in order
    ended: threading.Event = field(default_factory=threading.Event)

    def played(self, text: str, path: Path | None = None) -> None:
        self.heard.append(text)
        if path is not None:
            self.paths.append(path)

    @property
    def spoken(self) -> str:
        return " ".join(self.heard)


class RunningTurns:
    """Session key -> its running turn. Thread-safe: Stop arrives on another thread than the turn."""

    def __init__(self) -> None:
        self._turns: dict[str, TurnHandle] = {}
        self._lock = threading.Lock()

    def start(self, key: str) -> TurnHandle:
        """A new turn for key; a turn still running for it is cancelled ("replaced") and waited for."""
        self.stop(key, "replaced")
        handle = TurnHandle()
        with self._lock:
            self._turns[key] = handle
        return handle

    def end(self, key: str, handle: TurnHandle) -> None:
        """The turn's generator is done (finished, failed, cancelled or closed)."""
        handle.ended.set()
        with self._lock:
            if self._turns.get(key) is handle:
                del self._turns[key]

    def stop(self, key: str, reason: str = "stopped") -> TurnHandle | None:
        """Cancels key's running turn and waits (bounded) until it has ended; the handle, or None when none ran."""
        with self._lock:
            handle = self._turns.get(key)
        if handle is None:
            return None
        handle.cancel.cancel(reason)
        handle.ended.wait(STOP_WAIT_S)
        return handle
