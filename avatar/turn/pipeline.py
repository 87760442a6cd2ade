"""One turn as a pipeline of workers: chat -> splitter -> TTS -> talking head -> enhancement -> encoder.

Each stage runs on its own thread and hands its output to the next through a small bounded queue, so the chat model
keeps generating while earlier chunks are spoken and rendered, and each stage works on chunk n+1 while the next
stage handles chunk n. Frames travel in batches, so the encoder starts on a chunk's first frames while the head is
still drawing its last ones.

One CancelToken reaches every worker: each checks it between units of its work (a chat token, a chunk's speech, a
batch of frames) and while it waits on a queue, so Stop, a new turn or an interruption frees all of them within one
unit. Encoders write to a temporary name and rename when the chunk is complete: a cancelled chunk leaves no file.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from avatar.core.cancel import CancelToken
from avatar.core.errors import BackendError, Cancelled
from avatar.core.media import VideoWriter
from avatar.core.types import FPS, Audio
from avatar.head import n_frames

from .cancel import LinkedToken
from .events import TurnEvent
from .splitter import ChunkSplitter

log = logging.getLogger("avatar")

POLL_S = 0.02  # how often a waiting worker looks at the cancel token
QUEUE_CHUNKS = 2  # chunks waiting between two stages: enough to keep both busy, little work lost on cancel
QUEUE_BATCHES = 4  # frame batches waiting between head, enhancer and encoder
LOW_WATER_S = 1.5  # less speech than this left to play: the next chunk may end at a clause
DRY_S = 0.6  # less than this left: the next chunk goes with the words it has (>= the splitter's first_min_units)
JOIN_S = 10.0  # a worker still running after this long is reported (a stage stuck in native code)


@dataclass
class TurnStages:
    """The stages of one turn as small callables (AvatarSystem.respond builds them from its loaded stages).

    frames None: no photo, the turn is speech only. render_file (ray mode): renders a whole chunk into a file
    remotely instead of frames + enhance + encode here."""

    speak: Callable[[str], Audio]  # chunk text -> speech
    emotion: Callable[[str, str | None], str]  # chunk text, the chat model's [emotion] tag -> emotion label
    frames: Callable[[Audio, str, int], Iterable[np.ndarray]] | None = None  # speech, emotion, start frame -> batches
    enhance: Callable[[np.ndarray], np.ndarray] | None = None  # uint8 (B,H,W,3) -> uint8 (B,H',W',3)
    chunk_path: Callable[[int], Path] | None = None  # media mp4: where chunk i is written
    keep_frames: bool = False  # media raw: chunk events carry the frames as one array
    render_file: Callable[[Audio, str, int, Path], Path] | None = None


@dataclass
class Piece:
    """One chunk of the reply on its way through the stages."""

    index: int
    text: str
    emotion: str = ""
    speech: Audio | None = None
    start_frame: int = 0  # frames of this reply before this chunk: head motion and blinks continue across chunks
    path: Path | None = None


@dataclass
class TurnResult:
    """What a finished (or stopped) turn leaves: the reply, the chunks that went out, and per-stage figures."""

    reply: str = ""
    chunks_out: list[str] = field(default_factory=list)  # texts of the chunks handed to the consumer, in order
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: str = ""  # the reason, when the turn was stopped
    freed_s: float = 0.0  # from noticing the cancellation to every worker having ended

    @property
    def spoken(self) -> str:
        return " ".join(self.chunks_out)


_END = object()  # a stage has no more input


class TurnPipeline:
    """Runs one turn's stages on worker threads; iterate run() for the events.

        pipeline = TurnPipeline(stages, cancel)
        for event in pipeline.run(chat_stream):
            ...
        pipeline.result  # reply, timings, cancelled
    """

    def __init__(self, stages: TurnStages, cancel: CancelToken, splitter: ChunkSplitter | None = None,
                 queue_chunks: int = QUEUE_CHUNKS, low_water_s: float = LOW_WATER_S,
                 heartbeat_s: float | None = None, dry_s: float = DRY_S) -> None:
        self.stages = stages
        # a "wait" event after this long without one: a consumer that can only stop between events (Gradio closes a
        # cancelled request's generator only when its next() returns) is never held longer
        self.heartbeat_s = heartbeat_s
        self.token = LinkedToken(cancel)  # also cancelled by a failing worker or a consumer that stops reading
        self.splitter = splitter or ChunkSplitter()
        self.splitter.running_low = lambda: self._speech_left() < self.low_water_s
        self.splitter.running_dry = lambda: self._speech_left() < self.dry_s
        self.low_water_s, self.dry_s = low_water_s, dry_s
        self._speech_s, self._first_audio_t = 0.0, None  # speech made so far; when the first of it went out
        self.result = TurnResult()
        self.error: BaseException | None = None
        self._events: queue.Queue = queue.Queue()
        self._texts: queue.Queue = queue.Queue(queue_chunks)
        self._spoken: queue.Queue = queue.Queue(queue_chunks)
        self._raw: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self._enhanced: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self._threads: list[threading.Thread] = []
        self._busy: dict[str, float] = {}
        self._lock = threading.Lock()
        self.t0 = time.perf_counter()
        self._shown = ""  # the reply as the last "text" event showed it
        self._renders = stages.frames is not None or stages.render_file is not None

    # ------------------------------------------------------------ running
    def run(self, deltas: Iterable[str]) -> Iterator[TurnEvent]:
        """Yields the turn's events until the last chunk is out; then self.result holds the reply. A failing stage's
        error is raised here after every worker stopped; a cancelled turn ends with an "interrupted" event."""
        self._start(deltas)
        try:
            yield from self._drain()
        finally:  # also when the consumer stops reading (generator closed): nothing keeps running
            if self._alive():
                self.token.cancel("closed")
            self._join()
        if self.error is not None:
            raise self.error
        if self.result.cancelled:
            yield TurnEvent("interrupted", self.result.spoken,
                            data={"reason": self.result.cancelled, "freed_s": self.result.freed_s})

    def _start(self, deltas: Iterable[str]) -> None:
        workers = [("chat", self._chat_worker, (deltas,)), ("tts", self._tts_worker, ())]
        if self._renders:
            workers += [("head", self._head_worker, ()), ("enhance", self._enhance_worker, ()),
                        ("encode", self._encode_worker, ())]
        for name, target, args in workers:
            thread = threading.Thread(target=self._guard, args=(name, target, *args), name=f"turn-{name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drain(self) -> Iterator[TurnEvent]:
        last = time.perf_counter()
        while not self.token.cancelled:
            try:
                event = self._events.get(timeout=POLL_S)
            except queue.Empty:
                if self.heartbeat_s is not None and time.perf_counter() - last >= self.heartbeat_s:
                    last = time.perf_counter()
                    yield TurnEvent("wait")
                continue
            last = time.perf_counter()
            if event is _END:
                self.result.timings = self._timings()
                return
            if event.kind == "chunk":
                self.result.chunks_out.append(event.text)
            yield event
        self.result.cancelled = self.token.why or "stopped"
        noticed = time.perf_counter()
        self._join()
        self.result.freed_s = time.perf_counter() - noticed
        self.result.timings = self._timings()

    def _speech_left(self) -> float:
        """Seconds of the speech made so far still to play, counting from the first audio out (inf before it)."""
        if self._first_audio_t is None:
            return float("inf")
        return self._speech_s - (time.perf_counter() - self._first_audio_t)

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _join(self) -> None:
        deadline = time.perf_counter() + JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
            if thread.is_alive():
                log.warning("turn: worker %s still running %.0f s after the turn ended", thread.name, JOIN_S)

    def _guard(self, name: str, target: Callable, *args) -> None:
        """Runs one worker; an error ends the whole turn (the consumer raises it) instead of leaving others waiting."""
        try:
            target(*args)
        except Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread, which raises it
            log.info("turn: the %s stage failed: %s: %s", name, type(e).__name__, e)
            with self._lock:
                if self.error is None:
                    self.error = _as_domain_error(name, e)
            self.token.cancel("failed")

    # ------------------------------------------------------------ queues
    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            self.token.check()
            try:
                q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while True:
            self.token.check()
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def _emit(self, event: TurnEvent) -> None:
        self.token.check()  # a cancelled turn sends nothing more
        self._events.put(event)

    def _timed(self, stage: str, started: float) -> None:
        with self._lock:
            self._busy[stage] = self._busy.get(stage, 0.0) + time.perf_counter() - started

    def _mark(self, name: str) -> None:
        """First-time marks (seconds since the turn started): first token, first chunk's speech, first frame."""
        with self._lock:
            self._busy.setdefault(name, time.perf_counter() - self.t0)

    def _timings(self) -> dict[str, float]:
        with self._lock:
            return {f"{k}_s" if not k.endswith("_s") else k: round(v, 4) for k, v in self._busy.items()}

    # ------------------------------------------------------------ workers
    def _chat_worker(self, deltas: Iterable[str]) -> None:
        index, reply, stream = 0, "", iter(deltas)
        try:
            started = time.perf_counter()
            for delta in stream:
                self._mark("first_token")
                reply += delta
                settled = getattr(stream, "settled", False)  # the chat stage knows its last sentence is finished
                texts = self.splitter.feed(delta, settled)
                if settled:
                    texts += self.splitter.sentence_ended()
                for text in texts:
                    index = self._send_text(index, text, reply, stream)
                self.token.check()
            self._timed("chat", started)
        finally:  # a cancelled reply stops generating (the chat stage keeps nothing of it)
            getattr(stream, "close", lambda: None)()
        reply = getattr(stream, "text", "") or reply  # the chat stage's clean, complete reply
        for text in self.splitter.finish():
            index = self._send_text(index, text, reply, stream)
        self.result.reply = reply
        self._show(reply)
        self._put(self._texts, _END)

    def _show(self, reply: str) -> None:
        """A "text" event with the reply so far, when it changed since the last one."""
        if reply != self._shown:
            self._shown = reply
            self._emit(TurnEvent("text", reply))

    def _send_text(self, index: int, text: str, reply: str, stream: Any) -> int:
        self._show(reply)
        tag = getattr(stream, "emotion_tag", None)  # the model's [emotion] tag, known once it has streamed
        self._put(self._texts, Piece(index, text, emotion=tag or ""))
        return index + 1

    def _tts_worker(self) -> None:
        start_frame = 0
        while (piece := self._get(self._texts)) is not _END:
            started = time.perf_counter()
            piece.emotion = self.stages.emotion(piece.text, piece.emotion or None)
            piece.speech = self.stages.speak(piece.text)
            self._timed("tts", started)
            self._mark("first_audio")
            self._speech_s += piece.speech.duration_s
            self._first_audio_t = self._first_audio_t or time.perf_counter()
            piece.start_frame, start_frame = start_frame, start_frame + _frames_for(piece.speech)
            self._emit(TurnEvent("audio", piece.text, emotion=piece.emotion,
                                 data={"audio": piece.speech, "index": piece.index}))
            if not self._renders:
                self._emit(TurnEvent("chunk", piece.text, None, piece.emotion,
                                     {"audio": piece.speech, "frames": None, "index": piece.index}))
            else:
                self._put(self._spoken, piece)
        if self._renders:
            self._put(self._spoken, _END)
        else:
            self._events.put(_END)

    def _head_worker(self) -> None:
        while (piece := self._get(self._spoken)) is not _END:
            if self.stages.render_file is not None:  # ray mode: the whole chunk is rendered remotely
                self._put(self._raw, ("file", piece))
                continue
            self._put(self._raw, ("begin", piece))
            started = time.perf_counter()
            with closing(iter(self.stages.frames(piece.speech, piece.emotion, piece.start_frame))) as batches:
                for batch in batches:
                    self._timed("head", started)
                    self._mark("first_frame")
                    self._put(self._raw, ("frames", batch))
                    self.token.check()
                    started = time.perf_counter()
            self._put(self._raw, ("end", piece))
        self._put(self._raw, _END)

    def _enhance_worker(self) -> None:
        while (message := self._get(self._raw)) is not _END:
            if message[0] == "frames" and self.stages.enhance is not None:
                started = time.perf_counter()
                message = ("frames", self.stages.enhance(message[1]))
                self._timed("enhance", started)
            self._put(self._enhanced, message)
        self._put(self._enhanced, _END)

    def _encode_worker(self) -> None:
        sink: ChunkSink | None = None
        try:
            while (message := self._get(self._enhanced)) is not _END:
                started = time.perf_counter()
                if message[0] == "begin":
                    sink = ChunkSink(message[1], self.stages)
                elif message[0] == "frames":
                    self._frames_out(sink, message[1])
                elif message[0] == "file":
                    self._emit(self._render_remote(message[1]))
                else:
                    self._emit(sink.finish())
                    sink = None
                self._timed("encode", started)
                self._mark("first_chunk") if message[0] in ("end", "file") else None
            self._events.put(_END)
        finally:
            if sink is not None:
                sink.abort()

    def _frames_out(self, sink: "ChunkSink", batch: np.ndarray) -> None:
        """A batch to the chunk's file and, with raw media, out at once as a "frames" event: the hands-free player
        shows a chunk's first frames while the head still draws its last ones."""
        first = sink.frames_written
        sink.write(batch)
        if sink.frames is not None:
            self._emit(TurnEvent("frames", sink.piece.text, emotion=sink.piece.emotion,
                                 data={"frames": batch, "index": sink.piece.index, "first_frame": first}))

    def _render_remote(self, piece: Piece) -> TurnEvent:
        final = self.stages.chunk_path(piece.index)
        partial = _partial(final)
        try:
            self.stages.render_file(piece.speech, piece.emotion, piece.start_frame, partial)
            self.token.check()
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return TurnEvent("chunk", piece.text, final, piece.emotion, {"index": piece.index, "audio": piece.speech})


class ChunkSink:
    """Where one chunk's frames go: an MP4 written under a temporary name (renamed when complete), the frames kept as
    one array, or both."""

    def __init__(self, piece: Piece, stages: TurnStages) -> None:
        self.piece = piece
        self.final = stages.chunk_path(piece.index) if stages.chunk_path is not None else None
        self.writer = VideoWriter(_partial(self.final), fps=FPS, audio=piece.speech) if self.final else None
        self.frames: list[np.ndarray] | None = [] if stages.keep_frames else None
        self.frames_written = 0

    def write(self, batch: np.ndarray) -> None:
        self.frames_written += len(batch)
        if self.writer is not None:
            self.writer.write(batch)
        if self.frames is not None:
            self.frames.append(batch)

    def finish(self) -> TurnEvent:
        if self.writer is not None:
            os.replace(self.writer.close(), self.final)
        self.writer = None  # nothing left to abort
        frames = np.concatenate(self.frames) if self.frames else None
        piece = self.piece
        return TurnEvent("chunk", piece.text, self.final, piece.emotion,
                         {"audio": piece.speech, "frames": frames, "index": piece.index})

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()  # kills ffmpeg and deletes the partial file


def _as_domain_error(stage: str, error: BaseException) -> BaseException:
    """A GPU out of memory (torch.cuda.OutOfMemoryError, matched by name: this package does not import torch) becomes
    a sentence; anything else is raised as it is (domain errors already are sentences, faults get a reference)."""
    if type(error).__name__ == "OutOfMemoryError" or isinstance(error, MemoryError):
        out = BackendError(f"the {stage} stage ran out of memory during this turn; it was stopped. Try again, with a "
                           "smaller video size or without face enhancement")
        out.__cause__ = error
        return out
    return error


def _partial(final: Path) -> Path:
    """The temporary name a chunk is written under (same folder, same suffix, so ffmpeg picks the container)."""
    return final.with_name(f"{final.stem}.partial{final.suffix}")


def _frames_for(speech: Audio) -> int:
    return n_frames(speech.duration_s)

