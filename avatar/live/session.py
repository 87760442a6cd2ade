"""One hands-free conversation: the microphone's stream in, turns started and interrupted by the VAD, the reply's
chunks into the Playout that the WebRTC tracks read. Transport-free, so it is tested without a browser."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field

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
    """The Talk tab's settings for this conversation's replies: the photo, and respond()'s other keyword arguments
    (language, emotion, pose, background, size, enhance, voice, speed)."""

    photo: object = None
    settings: dict = field(default_factory=dict)


@dataclass
class _Early:
    """A transcript being made of the user's speech at a pause (audio: the very array the pause event carried)."""

    audio: np.ndarray
    future: Future
    cancel: CancelToken


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
        self._asr = ThreadPoolExecutor(1, thread_name_prefix="live-asr")  # transcripts made during the user's pause
        self._early: _Early | None = None
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
            elif event.kind == "pause":
                self._transcribe_early(event.audio)
            else:
                self._note("user_turn", speech_end_s=event.speech_end_s, seconds=len(event.audio) / SAMPLE_RATE)
                self._control.submit(self._start_turn, event.audio, self._take_early(event.audio))
        return events

    def _transcribe_early(self, samples: np.ndarray) -> None:
        """The user paused: their speech is transcribed now, while the VAD still waits for the turn's end. Speech
        that goes on makes this transcript stale (the turn's audio is then another array): it is cancelled. The
        early transcript is handled on the microphone's thread only (feed_mic), so a pause never races a turn."""
        self._drop_early("the user went on speaking")
        cancel = CancelToken()
        language = self.options.settings.get("language", "auto")
        future = self._asr.submit(self.system.transcribe, Audio(samples, SAMPLE_RATE), language, cancel)
        self._early = _Early(samples, future, cancel)

    def _drop_early(self, reason: str) -> None:
        early, self._early = self._early, None
        if early is not None:
            early.cancel.cancel(reason)

    def _take_early(self, samples: np.ndarray) -> "_Early | None":
        """The early transcript, when it was made of exactly this turn's audio."""
        early = self._early
        if early is None or early.audio is not samples:
            self._drop_early("the turn's audio differs")
            return None
        self._early = None
        return early

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

    def _start_turn(self, samples: np.ndarray, early: "_Early | None" = None) -> None:
        if self._turn_open:  # the user spoke again before the reply ended: that reply is cut off here
            self._interrupt(self._cut_off())
        self._cancel, self._turn_open = CancelToken(), True
        audio = Audio(samples.astype(np.float32), SAMPLE_RATE)
        self._turn = threading.Thread(target=self._run_turn, args=(audio, self._cancel, early), daemon=True,
                                      name="live-turn")
        self._turn.start()

    def _run_turn(self, audio: Audio, cancel: CancelToken, early: "_Early | None" = None) -> None:
        o = self.options
        try:
            heard = self._early_transcript(early)
            for ev in self.system.respond(self.conversation, photo=o.photo, audio=audio, cancel=cancel, media="raw",
                                          heard=heard, **o.settings):
                self._on_event(ev, cancel)
        except AvatarError as e:  # e.g. nothing understood: said on the page, the conversation goes on
            self._note("error", message=str(e))
            self._turn_open = False
            return
        self._wait_played(cancel)

    def _early_transcript(self, early: "_Early | None"):
        """The transcript made during the user's pause (waited for if still running); None when there was none or it
        failed (respond() then transcribes, and reports the failure as it would)."""
        if early is None:
            return None
        t0 = time.perf_counter()
        try:
            transcript = early.future.result()
        except (AvatarError, CancelledError):
            return None
        self._note("early_transcript", waited_s=round(time.perf_counter() - t0, 3))
        return transcript

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
        self._drop_early("closed")
        self._asr.shutdown(wait=False, cancel_futures=True)
        self.playout.clear()
        self._control.shutdown(wait=False, cancel_futures=True)
