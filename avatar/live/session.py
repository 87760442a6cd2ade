"""One hands-free conversation: the microphone's stream in, turns started and interrupted by the VAD, the reply's
chunks into the Playout that the WebRTC tracks read. Transport-free, so it is tested without a browser."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from avatar.core.cancel import CancelToken
from avatar.core.config import LiveConfig
from avatar.core.errors import AvatarError
from avatar.core.types import Audio
from avatar.live.echo import EchoGuard
from avatar.live.playout import Playout
from avatar.live.vad import SAMPLE_RATE, Endpointer, VadEvent

log = logging.getLogger("avatar.live")
JOIN_S = 2.0  # a cancelled turn frees its workers within 200 ms; this only bounds a stuck one


@dataclass
class LiveOptions:
    """The Talk tab's settings for this conversation's replies (AvatarSystem.respond's arguments)."""

    photo: object = None
    language: str = "auto"
    emotion: str = "auto"
    pose: str | None = None
    background: str | None = None
    size: int | None = None
    enhance: bool = False
    voice: str | None = None


class LiveSession:
    def __init__(self, system, config: LiveConfig, options: LiveOptions | None = None,
                 endpointer: Endpointer | None = None) -> None:
        self.system, self.config = system, config
        self.options = options or LiveOptions()
        self.conversation = system.new_conversation()
        self.echo = EchoGuard(config.echo_similarity)
        self.playout = Playout(on_played=self.echo.played, on_start=lambda what: self._note("first_" + what))
        self.listeners: list = []  # called with every event (the WebRTC data channel to the page)
        self.endpointer = endpointer or Endpointer(config)
        self.events: list[dict] = []  # what happened, for the page and the tests (kind, time.time(), details)
        self._control = ThreadPoolExecutor(1, thread_name_prefix="live-control")  # turns start/stop in order
        self._cancel: CancelToken | None = None
        self._turn: threading.Thread | None = None
        self._turn_open = False  # a turn runs or its reply still plays: an interruption concerns it
        self._lock = threading.Lock()

    # ------------------------------------------------------------ microphone
    def feed_mic(self, samples: np.ndarray) -> list[VadEvent]:
        """samples: float32 mono 16 kHz from the microphone, as they arrive."""
        events = self.endpointer.feed(samples, speaking=self._turn_open, is_echo=self.echo.is_echo)
        for event in events:
            if event.kind == "interrupt":
                heard = self._cut_off()  # silent at once; the bookkeeping follows on the control thread
                self._note("interrupt", speech_start_s=event.start_s)
                self._control.submit(self._interrupt, heard)
            else:
                self._note("user_turn", speech_end_s=event.speech_end_s, seconds=len(event.audio) / SAMPLE_RATE)
                self._control.submit(self._start_turn, event.audio)
        return events

    # ------------------------------------------------------------ turns
    def _cut_off(self) -> str:
        """Silence now: the turn's token is cancelled (no more chunks join the playout) and the queue emptied.
        Returns what the user heard of the reply."""
        if self._cancel is not None:
            self._cancel.cancel("interrupted")
        return self.playout.clear()

    def _interrupt(self, heard: str) -> None:
        """After _cut_off: waits for the turn's workers, then keeps what the user heard in the history, marked
        interrupted."""
        if self._turn is not None:
            self._turn.join(JOIN_S)
        self.playout.clear()  # a chunk that slipped in between the cancel and the workers' stop
        if self._turn_open:
            changed = self.system.interrupted(self.conversation, heard)
            self._note("interrupted", heard=heard, history_changed=changed)
        self._turn_open = False

    def _start_turn(self, samples: np.ndarray) -> None:
        if self._turn_open:  # the user spoke again before the reply ended: that reply is cut off here
            self._interrupt(self._cut_off())
        self._cancel, self._turn_open = CancelToken(), True
        audio = Audio(samples.astype(np.float32), SAMPLE_RATE)
        self._turn = threading.Thread(target=self._run_turn, args=(audio, self._cancel), daemon=True,
                                      name="live-turn")
        self._turn.start()

    def _run_turn(self, audio: Audio, cancel: CancelToken) -> None:
        o = self.options
        try:
            for ev in self.system.respond(self.conversation, photo=o.photo, audio=audio, language=o.language,
                                          emotion=o.emotion, pose=o.pose, background=o.background, size=o.size,
                                          enhance=o.enhance, voice=o.voice, cancel=cancel, media="raw"):
                self._on_event(ev, cancel)
        except AvatarError as e:  # e.g. nothing understood: said on the page, the conversation goes on
            self._note("error", message=str(e))
            self._turn_open = False
            return
        self._wait_played(cancel)

    def _on_event(self, ev, cancel: CancelToken) -> None:
        if cancel.cancelled:
            return
        if ev.kind == "audio":
            self.playout.add_audio(ev.data["index"], ev.data["audio"], ev.text)
            self._note("reply_audio", index=ev.data["index"], text=ev.text)
        elif ev.kind == "frames":
            self.playout.add_frames(ev.data["index"], ev.data["first_frame"], ev.data["frames"])
        elif ev.kind in ("transcript", "done"):
            self._note(ev.kind, text=ev.text)

    def _wait_played(self, cancel: CancelToken) -> None:
        """The turn stays open (interruptible) until its reply has played out."""
        while self.playout.speaking and not cancel.cancelled:
            cancel.wait(0.05)
        if not cancel.cancelled:
            self.playout.finish_turn()
            self._turn_open = False
            self._note("played")

    # ------------------------------------------------------------ page
    def _note(self, kind: str, **details) -> None:
        event = {"kind": kind, "t": time.time(), **details}
        with self._lock:
            self.events.append(event)
        for listener in list(self.listeners):
            listener(event)
        log.info("live %s %s", kind, details)

    def state(self, since: int = 0) -> dict:
        with self._lock:
            events = self.events[since:]
        return {"history": [list(r) for r in self.conversation.rounds], "events": events,
                "next": since + len(events), "speaking": self.playout.speaking, "turn_open": self._turn_open}

    def close(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel("closed")
        self.playout.clear()
        self._control.shutdown(wait=False, cancel_futures=True)
