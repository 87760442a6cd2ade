"""AvatarSystem: built once at start-up; loads every configured stage and keeps it in memory.

The Gradio tabs (app.py) and the CLI call its methods directly. A stage whose weights are missing falls back to its
embedded default inside its own `load()` (with a log line); a stage that cannot load at all is recorded as
unavailable with its reason and the rest of the system keeps working.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from avatar.core import media
from avatar.core.cancel import NEVER, CancelToken, stoppable
from avatar.core.config import AvatarConfig
from avatar.core.devices import resolve_device
from avatar.core.errors import BackendUnavailable, Cancelled
from avatar.core.text import check_text, detect_language
from avatar.core.types import Audio, ProgressFn, check_emotion, check_language
from avatar.core.validate import finite_number, parse_colour, video_size
from avatar.tts import check_speed
from avatar.turn import TurnPipeline, TurnStages
from avatar.turn.events import INTERRUPTED_MARK, TurnEvent

log = logging.getLogger("avatar")

STAGES: tuple[str, ...] = ("asr", "tts", "chat", "head", "matting", "enhance")


@dataclass
class StageStatus:
    name: str
    backend: str  # the backend that runs, or "unavailable" / "off"
    device: str = "cpu"
    load_s: float = 0.0
    note: str = ""  # fallback reason or error


CLEANUP_EVERY = 20  # new output files between two cleanups of the output folder (TTL and size cap)
VIDEO_AUDIO_RATE = 44100  # sample rate for audio files muxed into rendered videos


def _without_paths(text: str) -> str:
    """A note for a client: the server's folders stay in its log and System tab ('/srv/w/gfpgan/x.pth' -> 'x.pth')."""
    return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s:,;()]+", lambda m: Path(m.group()).name, text)


MEDIA = ("mp4", "raw", "both")  # what a turn's chunk events carry


@dataclass
class TurnOptions:
    """A turn's settings as respond() received them, then checked (intensity, size, colour filled in)."""

    language: str = "auto"
    emotion: str = "auto"
    pose: str | None = None
    background: str | None = None
    size: int | None = None
    enhance: bool = False
    voice: str | None = None
    chunk_dir: Path | None = None
    media: str = "mp4"
    speed: float | None = None  # the voice's speed (1 normal; None: config tts.speed)
    intensity: float = 1.0
    colour: tuple | None = None
    mood: str | None = None  # the user's mood, from their words


@dataclass
class _Asked:
    """The question of a conversation's latest turn, and whether its round joined the history (interrupted())."""

    question: str
    committed: bool = False


def _chunk_emotion(emotion: str, language: str, text: str, tag: str | None) -> str:
    """A chunk's emotion: the one chosen, or ("auto") from the chunk's own words and the model's tag."""
    from avatar.core.emotion import reply_emotion

    return emotion if emotion != "auto" else reply_emotion(text, language, tag).label


def _clip(clip_frames, head, face, pose, colour, size, matting, intensity, speech, emotion, start_frame):
    return clip_frames(head, face, speech, emotion, pose, background=colour, size=size, matting=matting,
                       intensity=intensity, start_frame=start_frame)


class AvatarSystem:
    def __init__(self, config: AvatarConfig) -> None:
        self.config = config
        self.config_path: str | None = None  # the TOML file config came from (the doctor's commands name it)
        self.device = resolve_device(config.device)
        self.status: dict[str, StageStatus] = {}
        self.last_timings: dict[str, float] = {}
        self.output_dir = Path(config.output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.asr = self.tts = self.chat_model = self.head = self.matting = self.enhancer = None
        self._faces: dict[tuple[str, int], Any] = {}  # prepared photos, keyed by content hash and size
        self._idle = None  # IdleLoops, made on first use
        self._outputs_made = 0
        self.remote = None  # ray mode: the render deployment (cluster.serve.RemoteRender) behind head/matting/enhance
        self._lock = threading.Lock()
        self._asked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # conversation -> _Asked

    # ------------------------------------------------------------ start-up
    @classmethod
    def load(cls, config: AvatarConfig | None = None, stages: tuple[str, ...] = STAGES) -> "AvatarSystem":
        system = cls(config or AvatarConfig())
        t0 = time.perf_counter()
        if system.config.cluster.mode == "ray":
            stages = system._connect_cluster(stages)
        for name in stages:
            system._load_stage(name)
        system.startup_s = time.perf_counter() - t0
        log.info("avatar system ready in %.1f s on %s", system.startup_s, system.device)
        return system

    def _load_stage(self, name: str) -> None:
        loader = getattr(self, f"_load_{name}")
        t0 = time.perf_counter()
        try:
            stage = loader()
            backend = (getattr(stage, "backend", None) or getattr(stage, "name", "off")) if stage else "off"
            note = getattr(stage, "fallback_reason", None) or ""
            device = getattr(stage, "device", "cpu") if stage else "-"
        except Exception as e:  # a stage that cannot load must not take the app down
            log.exception("stage %s could not load", name)
            backend, note, device = "unavailable", f"{type(e).__name__}: {e}", "-"
        st = StageStatus(name, backend, device, time.perf_counter() - t0, note)
        self.status[name] = st
        log.info("stage %-8s backend=%-12s device=%-5s load %.1f s%s", name, st.backend, st.device, st.load_s,
                 f"  ({note})" if note else "")

    def _load_asr(self):
        from .asr import Asr

        self.asr = Asr.load(self.config)
        return self.asr

    def _load_tts(self):
        from .tts import Tts

        self.tts = Tts.load(self.config)
        return self.tts

    def _load_chat(self):
        from .chat import ChatModel

        self.chat_model = ChatModel.load(self.config)
        return self.chat_model

    def _load_head(self):
        from .head import load_head

        self.head = load_head(self.config)
        return self.head

    def _load_matting(self):
        from .matting import Matting

        self.matting = Matting.load(self.config)
        return self.matting

    def _load_enhance(self):
        from .enhance import Enhancer

        enhancer = Enhancer.load(self.config)
        self.enhancer = enhancer if getattr(enhancer, "backend", "off") != "off" else None
        return enhancer  # "off" keeps its reason for the System tab

    def _connect_cluster(self, stages: tuple[str, ...]) -> tuple[str, ...]:
        """Ray mode: ASR, TTS and the render stages become handles to Ray Serve deployments; returns the stages
        still to load here (the chat model stays in process)."""
        from .cluster.serve import start

        remote = start(self.config)
        self.remote = remote.render
        self.asr, self.tts = remote.asr, remote.tts
        notes = {**remote.notes["speech"], **remote.notes["render"]}
        for name in ("asr", "tts", "head", "matting", "enhance"):
            note = notes.get(name, {})
            self.status[name] = StageStatus(name, f"ray/{note.get('backend', '?')}", note.get("device", "-"),
                                            remote.started_s, note.get("note", ""))
        if notes.get("enhance", {}).get("backend", "off") != "off":
            self.enhancer = remote.render
        return tuple(s for s in stages if s not in ("asr", "tts", "head", "matting", "enhance"))

    def _require(self, stage: str):
        obj = {"asr": self.asr, "tts": self.tts, "chat": self.chat_model, "head": self.head,
               "matting": self.matting, "enhance": self.enhancer}[stage]
        if obj is None:
            st = self.status.get(stage)
            why = f": {_without_paths(st.note)}" if st and st.note else ""
            raise BackendUnavailable(f"the {stage} stage is not available{why} (the System tab and `python -m "
                                     "avatar doctor` say what is missing)")
        return obj

    # ------------------------------------------------------------ single stages
    def load_audio(self, source: str | Path | Audio | tuple, sample_rate: int = 16000,
                   max_s: float | None = None) -> Audio:
        """A path, an Audio, or Gradio's (sample_rate, array) tuple -> Audio at sample_rate (files longer than max_s:
        AudioTooLong before they are fully decoded)."""
        if isinstance(source, Audio):
            return media.resample(source, sample_rate)
        if isinstance(source, tuple):
            if len(source) != 2:
                raise media.BadAudio("expected audio as (sample_rate, samples)")
            audio = media.audio_from_array(source[1], source[0])
            if max_s is not None and audio.duration_s > max_s:
                raise media.AudioTooLong(f"the audio is {audio.duration_s:.0f} s long; the maximum is {max_s:g} s")
            return media.resample(audio, sample_rate)
        if source is None or str(source) == "":
            raise media.BadAudio("no audio given: record or upload a clip")
        return media.load_audio(source, sample_rate, max_s)

    def transcribe(self, audio: str | Path | Audio | tuple, language: str = "auto", cancel: CancelToken = NEVER):
        """-> avatar.asr.Transcript. Raises AudioTooShort/AudioTooLong/NoSpeech/BadAudio/UnknownLanguage (the stage
        checks language, duration and silence), Cancelled when cancel was cancelled (checked between segments)."""
        speech = self.load_audio(audio, max_s=self.config.limits.max_audio_s)
        t0 = time.perf_counter()
        result = self._require("asr").transcribe(speech, language=language, cancel=cancel)
        self.last_timings["asr_s"] = time.perf_counter() - t0
        return result

    def speak(self, text: str, language: str = "auto", voice: str | None = None,
              speed: float | None = None) -> Audio:
        """Raises EmptyText/TextTooLong/UnknownLanguage (checked by the stage). speed: 1 normal (None: config)."""
        t0 = time.perf_counter()
        audio = self._require("tts").synthesize(text, language=language, voice=voice, speed=speed)
        self.last_timings["tts_s"] = time.perf_counter() - t0
        return audio

    def voices(self) -> list[str]:
        return list(self.tts.voices()) if self.tts is not None else []

    def new_conversation(self):
        return self._require("chat").new_conversation()

    def chat(self, conversation, text: str, language: str = "auto", mood: str | None = None,
             keep: bool = True, cancel: CancelToken = NEVER) -> Iterator[str]:
        """Streams reply text deltas; the round joins the history only when the reply completes (keep=False: when
        the caller calls the stream's commit()). The chat stage raises EmptyText/TextTooLong before generating."""
        language = check_language(language)
        if language == "auto":
            language = detect_language(text or "")
        return self._require("chat").stream(conversation, text, language=language, mood=mood, keep=keep,
                                            cancel=cancel)

    # ------------------------------------------------------------ video
    def prepare_photo(self, photo):
        """A photo (array / path) -> the head engine's PreparedFace, cached by content; a PreparedFace passes."""
        from .head import PreparedFace

        if isinstance(photo, PreparedFace) or type(photo).__name__ == "RemoteFace":
            return photo
        from avatar.core.validate import check_photo

        lim = self.config.limits
        image = check_photo(media.load_image(photo, lim.max_image_megapixels), lim.min_image_side)
        if self.remote is not None:
            return self._remote_face(image)
        head = self._require("head")
        key = (hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest(), getattr(head, "size", 256))
        with self._lock:
            if key not in self._faces:
                if len(self._faces) > 16:
                    self._faces.pop(next(iter(self._faces)))
                self._faces[key] = head.prepare(image)
            return self._faces[key]

    def _remote_face(self, image: np.ndarray):
        from .cluster.jobs import photo_key

        key = (photo_key(image), 0)
        with self._lock:
            if key in self._faces:
                return self._faces[key]
        face = self.remote.prepare(image)  # the worker checks the photo (no face found, ...) and keeps it prepared
        with self._lock:
            if len(self._faces) > 16:
                self._faces.pop(next(iter(self._faces)))
            self._faces[key] = face
        return face

    def new_output_path(self, suffix: str, folder: Path | None = None) -> Path:
        self._outputs_made += 1
        if self._outputs_made % CLEANUP_EVERY == 0:  # besides the app's timer: a burst of renders stays bounded too
            self.cleanup_outputs()
        folder = folder or self.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex}{suffix}"  # 122 random bits: unguessable

    def render(self, photo, speech, emotion: str = "neutral", pose: str | None = None,
               background: str | tuple | None = None, size: int | None = None, enhance: bool = False,
               out_path: str | Path | None = None, intensity: float | None = None,
               progress: ProgressFn | None = None, start_frame: int = 0, cancel=None) -> Path:
        """Photo (or a prepare_photo() result) + speech (path / Audio) -> MP4 (H.264 + AAC, 25 fps). Streams
        frames: constant memory. The speech keeps its own sample rate in the video (the engines resample what they
        analyse themselves). start_frame: frames of the same performance already shown (head motion and blinks
        continue from there). cancel: anything with is_set() (a CancelToken); once set, the clip stops at its next
        frame batch (here or on a remote replica), raises Cancelled and leaves no file."""
        from .render import render_clip

        intensity, size, colour = self.check_video_options(intensity, size, background, enhance)
        emotion = check_emotion(emotion)
        lim = self.config.limits
        audio = speech if isinstance(speech, Audio) else self.load_audio(speech, VIDEO_AUDIO_RATE,
                                                                           lim.max_render_audio_s)
        audio = media.check_duration(audio, lim.min_audio_s, lim.max_render_audio_s)
        face = self.prepare_photo(photo)
        out = Path(out_path) if out_path else self.new_output_path(".mp4")
        t0 = time.perf_counter()
        stopped = functools.partial(Cancelled, "the render was stopped")
        if self.remote is not None:
            from .cluster.jobs import RenderJob

            job = RenderJob(face, audio, emotion, pose or self.config.head.pose, colour, size, enhance, intensity,
                            start_frame)
            self.remote.render(job, out, progress, cancel)
        else:
            render_clip(self._require("head"), face, audio, emotion, pose or self.config.head.pose,
                        background=colour, size=size, matting=self.matting, out_path=out,
                        enhancer=self._enhance_fn() if enhance else None, intensity=intensity,
                        progress=stoppable(progress, cancel, stopped), start_frame=start_frame)
        _unless_stopped(out, cancel, stopped)
        self.last_timings["render_s"] = time.perf_counter() - t0
        return out

    def check_video_options(self, intensity, size, background, enhance: bool) -> tuple[float, int, tuple | None]:
        """The cheap checks of a render's options, done before any audio is decoded or model runs (a turn does them
        before ASR and chat): (intensity, size, colour) or a domain error saying what to change."""
        intensity = finite_number(self.config.head.intensity if intensity is None else intensity,
                                  "the emotion intensity", 0.0, 1.0)
        size, colour = video_size(size, self.config.head.size), parse_colour(background)
        if enhance:
            self._require("enhance")
        return intensity, size, colour

    def _enhance_fn(self):
        enhancer = self._require("enhance")
        return enhancer.enhance_faces

    def matte(self, photo, background: str | tuple | None = "#00ff00") -> np.ndarray:
        """Photo -> (H,W,3) photo composited on a solid colour; background None / 'none': the (H,W,4) RGBA cut-out
        (transparent background, for a PNG). Photos beyond limits.max_image_side are downscaled first."""
        from avatar.head.face import load_photo

        image = load_photo(photo, self.config.limits.max_image_side, self.config.limits)
        colour = parse_colour(background)
        if self.remote is not None:
            return self.remote.matte(image, colour)
        matting = self._require("matting")
        alpha = matting.alpha(image[None])
        if colour is None:
            return np.dstack([image, np.round(alpha[0] * 255).astype(np.uint8)])
        return matting.composite(image[None], alpha, colour)[0]

    def enhance(self, source: str | Path | np.ndarray, out_path: str | Path | None = None,
                progress: ProgressFn | None = None, cancel=None):
        """A photo (array/path) -> enhanced array; a video path -> enhanced MP4 path (progress(fraction, text) after
        every batch of frames; the fraction is None when the file's header has no duration). cancel, as render's:
        a video stops at its next batch (Cancelled, no file)."""
        from avatar.head.face import load_photo

        enhancer = self._require("enhance")
        lim = self.config.limits
        info = media.probe(source, decode=False) if isinstance(source, (str, Path)) and Path(source).is_file() else None
        if info is not None and info.is_video:  # by its streams: .m4v/.3gp/.ts/... too
            if info.duration_s > lim.max_render_audio_s:
                raise media.AudioTooLong(f"the video is {info.duration_s:.0f} s long; the maximum is "
                                         f"{lim.max_render_audio_s:g} s")
            out = Path(out_path) if out_path else self.new_output_path(".mp4")
            # also without a duration header; in ray mode the enhancer is the render deployment's handle
            stopped = functools.partial(Cancelled, "the enhancement was stopped")
            enhancer.enhance_video(source, out, lim.max_render_audio_s, progress=stoppable(progress, cancel, stopped))
            return _unless_stopped(out, cancel, stopped)
        return enhancer.enhance_image(load_photo(source, lim.max_image_side, lim))

    # ------------------------------------------------------------ a conversation turn
    def respond(self, conversation, photo=None, audio=None, text: str | None = None, language: str = "auto",
                emotion: str = "auto", pose: str | None = None, background: str | None = None,
                size: int | None = None, enhance: bool = False, voice: str | None = None,
                chunk_dir: Path | None = None, cancel: CancelToken = NEVER, media: str = "mp4",
                heartbeat_s: float | None = None, speed: float | None = None, heard=None) -> Iterator[TurnEvent]:
        """One spoken turn as a generator of TurnEvents: transcript, mood, then the pipelined reply (avatar/turn:
        chat -> chunks -> speech -> frames -> enhancement -> encoder on their own workers), then done.

        media "mp4": chunk events carry an MP4 path; "raw": the chunk's Audio and frames (no encoding); "both".
        cancel: Stop, a new turn or an interruption; every stage stops within one unit of its work and the turn ends
        with an "interrupted" event. The round joins the history only when the whole turn completes: a failed or
        cancelled turn leaves the history as it was (see interrupted() for the part of a reply that was heard).
        heartbeat_s: a "wait" event whenever nothing else came for that long (for consumers that can only be
        stopped between events). speed: the voice's speed, 1 normal (None: config tts.speed). heard: the audio's
        Transcript when it was made already (the hands-free mode transcribes while it waits for the turn's end).
        """
        opts = TurnOptions(language, emotion, pose, background, size, enhance, voice, chunk_dir, media, speed)
        self._asked.pop(conversation, None)  # interrupted() must never touch an earlier turn's round
        face = self._check_turn(opts, photo)  # cheap checks and the photo before any model work
        t0 = time.perf_counter()
        try:
            text = yield from self._hear(audio, text, opts, cancel, heard)
        except Cancelled:
            yield TurnEvent("interrupted", "", data={"reason": cancel.reason, "freed_s": 0.0})
            return
        self._asked[conversation] = _Asked(text)
        turn = self.config.turn
        pipeline = TurnPipeline(self._turn_stages(opts, face), cancel, self._splitter(opts.media), turn.queue_chunks,
                                turn.low_water_s, heartbeat_s, turn.dry_s)
        stream = self.chat(conversation, text, opts.language, mood=opts.mood, keep=False, cancel=pipeline.token)
        yield from pipeline.run(stream)
        if pipeline.result.cancelled:
            return  # the interrupted event was the last one; the history is unchanged
        self._asked[conversation] = _Asked(text, committed=stream.commit())
        yield self._done(opts, stream, pipeline.result, t0)

    def _check_turn(self, opts: "TurnOptions", photo):
        """Every cheap check of a turn's options, and the photo prepared (cached), before ASR and chat run."""
        from avatar.core.types import check_language

        check_language(opts.language)
        if opts.emotion != "auto":
            check_emotion(opts.emotion)
        if opts.media not in MEDIA:
            raise ValueError(f"media must be one of {MEDIA}, not {opts.media!r}")
        if opts.speed is not None:
            check_speed(opts.speed)
        self._require("tts")
        self._require("chat")
        if photo is None:
            return None
        opts.intensity, opts.size, opts.colour = self.check_video_options(None, opts.size, opts.background,
                                                                           opts.enhance)
        return self.prepare_photo(photo)

    def _hear(self, audio, text: str | None, opts: "TurnOptions", cancel: CancelToken, heard=None):
        """The user's words: typed text, or the transcript of the audio (yielded as an event); then their mood.
        Sets opts.language (detected when "auto") and opts.mood. Raises Cancelled when the turn was stopped."""
        from avatar.core.emotion import analyze_text

        if audio is not None and not (text or "").strip():
            transcript = heard if heard is not None else self.transcribe(audio, opts.language, cancel)
            text, opts.language = transcript.text, transcript.language
            yield TurnEvent("transcript", text, data={"language": opts.language})
        text = check_text(text, self.config.limits.max_text_chars)  # before any model work
        opts.language = detect_language(text) if opts.language == "auto" else opts.language
        mood = analyze_text(text, opts.language)
        opts.mood = mood.label
        yield TurnEvent("mood", mood.label, data={"confidence": mood.confidence})
        cancel.check()
        return text

    def _splitter(self, media: str):
        """A short whole first sentence goes alone only where sound plays on its own clock and the face follows
        (raw frames: the hands-free mode); the Talk tab plays whole MP4 chunks, so a 1 s first chunk would leave
        the player waiting for the second one's video."""
        from .turn import ChunkSplitter

        turn = self.config.turn
        sentence_min = turn.first_sentence_min_units if media == "raw" else turn.first_chunk_min_units
        return ChunkSplitter(turn.first_chunk_min_units, turn.clause_first, turn.first_chunk_max_units, sentence_min)

    def _turn_stages(self, opts: "TurnOptions", face) -> TurnStages:
        """The turn's stages as callables over the loaded stages (avatar/turn sees nothing else)."""
        tts = self._require("tts")
        stages = TurnStages(speak=lambda text: tts.synthesize(text, language="auto", voice=opts.voice,
                                                             speed=opts.speed),
                            emotion=functools.partial(_chunk_emotion, opts.emotion, opts.language))
        if face is None:
            return stages
        pose = opts.pose or self.config.head.pose
        if opts.media in ("mp4", "both"):
            stages.chunk_path = lambda index: self.new_output_path(".mp4", opts.chunk_dir)
        stages.keep_frames = opts.media in ("raw", "both")
        if self.remote is not None:
            if stages.keep_frames:
                raise BackendUnavailable("raw chunks (frames) need local mode; use media='mp4' in ray mode")
            stages.render_file = lambda speech, label, start, out: self.render(
                face, speech, label, pose, opts.background, opts.size, opts.enhance, out_path=out, start_frame=start)
            return stages
        from .render import clip_frames

        stages.frames = functools.partial(_clip, clip_frames, self._require("head"), face, pose, opts.colour,
                                          opts.size, self.matting, opts.intensity)
        stages.enhance = self._enhance_fn() if opts.enhance else None
        return stages

    def _done(self, opts: "TurnOptions", stream, result, t0: float) -> TurnEvent:
        from avatar.core.emotion import reply_emotion

        tag = getattr(stream, "emotion_tag", None)
        final = reply_emotion(result.reply, opts.language, tag).label if opts.emotion == "auto" else opts.emotion
        timings = {**result.timings, "total_s": round(time.perf_counter() - t0, 4)}
        self.last_timings = timings  # the CLI's figure; the app keeps each session's own (data["timings"])
        # data: the timings, and whether the reply was a fixed notice (it does not join the history)
        return TurnEvent("done", result.reply, emotion=final,
                         data={**timings, "timings": timings, "notice": bool(getattr(stream, "notice", False))})

    def interrupted(self, conversation, spoken_text: str) -> bool:
        """The user cut the reply off (or pressed Stop) after hearing spoken_text: the question and the part of the
        reply that was heard join the history, marked as interrupted, whether or not the turn had finished
        generating. Nothing heard: a finished turn's round is removed, an unfinished one leaves nothing. True when
        the history changed."""
        asked = self._asked.pop(conversation, None)
        if asked is None:
            return False
        spoken = (spoken_text or "").strip()
        reply = spoken + INTERRUPTED_MARK if spoken else None
        if asked.committed:
            conversation.replace_last(asked.question, reply)
        elif reply is not None:
            conversation.add(asked.question, reply)
        return asked.committed or reply is not None

    # ------------------------------------------------------------ reports
    def doctor(self) -> dict:
        from avatar.weights.doctor import doctor_report

        report = doctor_report(self.config, config_path=self.config_path)
        report["loaded"] = {n: vars(s) for n, s in self.status.items()}
        report["device"] = self.device
        return report

    def cleanup_outputs(self, max_age_s: float | None = None, max_mb: float | None = None) -> int:
        """Deletes generated files older than max_age_s (default: config.server.output_ttl_s), then the oldest ones
        until the folder holds at most max_mb megabytes (default: config.server.max_output_mb). Returns the count."""
        ttl = self.config.server.output_ttl_s if max_age_s is None else max_age_s
        cap = self.config.server.max_output_mb if max_mb is None else max_mb
        files = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in self.output_dir.rglob("*") if p.is_file())
        cutoff, total, removed = time.time() - ttl, sum(size for _, size, _ in files), 0
        for mtime, size, path in files:  # oldest first
            if mtime >= cutoff and total <= cap * 1e6:
                break
            path.unlink(missing_ok=True)
            total, removed = total - size, removed + 1
        for d in sorted(self.output_dir.rglob("*"), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        return removed

    # ------------------------------------------------------------ the avatar at rest
    def default_portrait(self) -> Path | None:
        """The portrait shown before the user picks one (config head.default_portrait), as a file."""
        from .portrait import default_portrait

        return default_portrait(self.config)

    def idle_clip(self, photo, size: int | None = None, background: str | tuple | None = None) -> Path:
        """A short MP4 of the portrait at rest (breathing, blinks, glances), cached per photo, size and colour: what
        the Talk tab shows while a reply is being made."""
        from .portrait import IdleLoops

        with self._lock:
            if self._idle is None:
                self._idle = IdleLoops(self)
        return self._idle.clip(photo, size, background)

    # ------------------------------------------------------------ keeping a conversation
    def export_markdown(self, rounds: list[tuple[str, str]], folder: Path | None = None) -> Path:
        """The conversation's exchanges (the caller's full list, oldest first) as a Markdown file."""
        from .export import conversation_markdown

        out = self.new_output_path(".md", folder)
        out.write_text(conversation_markdown(rounds), encoding="utf-8")
        return out

    def export_video(self, videos: list[Path], folder: Path | None = None) -> Path:
        """The session's reply videos, in order, joined into one MP4."""
        from .export import join_replies

        return join_replies(videos, self.new_output_path(".mp4", folder))


def _unless_stopped(path: Path, cancel, error: Callable[[], Exception]) -> Path:
    """A finished file, unless Stop came after the last frame batch (while the file was encoded): then it goes too."""
    if cancel is not None and cancel.is_set():
        path.unlink(missing_ok=True)
        raise error()
    return path
