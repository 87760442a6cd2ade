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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from avatar.core import media
from avatar.core.config import AvatarConfig
from avatar.core.devices import resolve_device
from avatar.core.errors import BackendUnavailable
from avatar.core.text import check_text, detect_language, split_sentences
from avatar.core.types import Audio, check_emotion, check_language
from avatar.core.validate import finite_number, parse_colour, video_size
from avatar.tts import check_speed

log = logging.getLogger("avatar")

STAGES: tuple[str, ...] = ("asr", "tts", "chat", "head", "matting", "enhance")
ProgressFn = Callable[[float, str], None]


@dataclass
class StageStatus:
    name: str
    backend: str  # the backend that runs, or "unavailable" / "off"
    device: str = "cpu"
    load_s: float = 0.0
    note: str = ""  # fallback reason or error


@dataclass
class TurnEvent:
    """One step of a streamed conversation turn (see AvatarSystem.respond)."""

    kind: str  # transcript | mood | text | chunk | done
    text: str = ""  # transcript / reply so far / sentence of the chunk
    path: Path | None = None  # chunk: an MP4 of one sentence
    emotion: str = ""
    data: dict[str, Any] = field(default_factory=dict)


CLEANUP_EVERY = 20  # new output files between two cleanups of the output folder (TTL and size cap)
VIDEO_AUDIO_RATE = 44100  # sample rate for audio files muxed into rendered videos


def _without_paths(text: str) -> str:
    """A note for a client: the server's folders stay in its log and System tab ('/srv/w/gfpgan/x.pth' -> 'x.pth')."""
    return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s:,;()]+", lambda m: Path(m.group()).name, text)


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

    def transcribe(self, audio: str | Path | Audio | tuple, language: str = "auto"):
        """-> avatar.asr.Transcript. Raises AudioTooShort/AudioTooLong/NoSpeech/BadAudio/UnknownLanguage (the stage
        checks language, duration and silence)."""
        speech = self.load_audio(audio, max_s=self.config.limits.max_audio_s)
        t0 = time.perf_counter()
        result = self._require("asr").transcribe(speech, language=language)
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

    def chat(self, conversation, text: str, language: str = "auto", mood: str | None = None) -> Iterator[str]:
        """Streams reply text deltas; the round joins the history only when the reply completes. The chat stage
        raises EmptyText/TextTooLong before generating."""
        language = check_language(language)
        if language == "auto":
            language = detect_language(text or "")
        return self._require("chat").stream(conversation, text, language=language, mood=mood)

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
        continue from there). cancel (ray mode): anything with is_set(); the remote clip stops when it is set."""
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
        if self.remote is not None:
            from .cluster.jobs import RenderJob

            job = RenderJob(face, audio, emotion, pose or self.config.head.pose, colour, size, enhance, intensity,
                            start_frame)
            self.remote.render(job, out, progress, cancel)
        else:
            render_clip(self._require("head"), face, audio, emotion, pose or self.config.head.pose,
                        background=colour, size=size, matting=self.matting, out_path=out, enhancer=self._enhance_fn() if enhance else None,
                        intensity=intensity, progress=progress, start_frame=start_frame)
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

    def enhance(self, source: str | Path | np.ndarray, out_path: str | Path | None = None):
        """A photo (array/path) -> enhanced array; a video path -> enhanced MP4 path."""
        from avatar.head.face import load_photo

        enhancer = self._require("enhance")
        lim = self.config.limits
        info = media.probe(source, decode=False) if isinstance(source, (str, Path)) and Path(source).is_file() else None
        if info is not None and info.is_video:  # by its streams: .m4v/.3gp/.ts/... too
            if info.duration_s > lim.max_render_audio_s:
                raise media.AudioTooLong(f"the video is {info.duration_s:.0f} s long; the maximum is "
                                         f"{lim.max_render_audio_s:g} s")
            if self.remote is not None:
                raise BackendUnavailable("enhancing a video file runs in local mode only; enhance photos, or "
                                         "render with enhancement on")
            out = Path(out_path) if out_path else self.new_output_path(".mp4")
            return enhancer.enhance_video(source, out, lim.max_render_audio_s)  # also without a duration header
        return enhancer.enhance_image(load_photo(source, lim.max_image_side, lim))

    # ------------------------------------------------------------ a conversation turn
    def respond(self, conversation, photo=None, audio=None, text: str | None = None, language: str = "auto",
                emotion: str = "auto", pose: str | None = None, background: str | None = None,
                size: int | None = None, enhance: bool = False, voice: str | None = None,
                chunk_dir: Path | None = None, speed: float | None = None) -> Iterator[TurnEvent]:
        """One spoken turn as a generator: transcript -> reply text -> per sentence: speech -> video chunk.
        speed: the voice's speed (1 normal; None: config tts.speed).

        Each sentence's MP4 chunk is yielded as soon as it is rendered, while the chat model is still producing the
        next sentence, so the first chunk plays long before the reply is finished. History is updated only when the
        reply completes (the chat stage does that).
        """
        from avatar.core.emotion import analyze_text, reply_emotion

        if emotion != "auto":
            check_emotion(emotion)
        if speed is not None:
            check_speed(speed)  # before ASR and chat run
        if photo is not None:
            self.check_video_options(None, size, background, enhance)  # before ASR and chat run
        timings: dict[str, float] = {}
        if photo is not None:
            photo = self.prepare_photo(photo)  # fail early on a bad photo; every sentence reuses the prepared face
        t0 = time.perf_counter()
        if audio is not None and not (text or "").strip():
            transcript = self.transcribe(audio, language)
            text, language = transcript.text, transcript.language
            timings["asr_s"] = time.perf_counter() - t0
            yield TurnEvent("transcript", text, data={"language": language})
        text = check_text(text, self.config.limits.max_text_chars)  # before any model work
        if language == "auto":
            language = detect_language(text)
        mood = analyze_text(text, language)
        yield TurnEvent("mood", mood.label, data={"confidence": mood.confidence})
        t1 = time.perf_counter()
        reply, pending, first_token_s = "", "", None
        stream = self.chat(conversation, text, language, mood=mood.label)
        render = functools.partial(self._speak_and_render, emotion=emotion, language=language, photo=photo,
                                   pose=pose, background=background, size=size, enhance=enhance, voice=voice,
                                   speed=speed, chunk_dir=chunk_dir, timings=timings, clock={"frame": 0})
        for delta in stream:
            if first_token_s is None:
                first_token_s = time.perf_counter() - t1
            reply += delta
            pending += delta
            sentences = split_sentences(pending)
            if len(sentences) > 1:  # the last piece may still grow: speak only the completed ones
                yield TurnEvent("text", reply)
                for sentence in sentences[:-1]:
                    yield from render(sentence, getattr(stream, "emotion_tag", None))
                pending = sentences[-1]
        timings["chat_s"] = time.perf_counter() - t1
        timings["chat_first_token_s"] = first_token_s or 0.0
        reply = getattr(stream, "text", "") or reply
        yield TurnEvent("text", reply)
        tag = getattr(stream, "emotion_tag", None)
        if pending.strip():
            yield from render(pending, tag)
        final = reply_emotion(reply, language, tag) if emotion == "auto" else None
        self.last_timings = {**timings, "total_s": time.perf_counter() - t0}
        # data: the timings, and whether the reply was a fixed notice (it does not join the history)
        yield TurnEvent("done", reply, emotion=final.label if final else emotion,
                        data={**self.last_timings, "notice": bool(getattr(stream, "notice", False))})

    def _speak_and_render(self, sentence: str, tag: str | None, *, emotion, language, photo, pose, background, size,
                          enhance, voice, speed, chunk_dir, timings, clock) -> Iterator[TurnEvent]:
        """One sentence: speech, then its video chunk. clock["frame"] counts the reply's frames so far: each chunk's
        head motion and blinks continue where the previous sentence's stopped (no jump at the seams)."""
        from avatar.core.emotion import reply_emotion

        from .head import n_frames

        if not sentence.strip():
            return
        label = emotion if emotion != "auto" else reply_emotion(sentence, language, tag).label
        t0 = time.perf_counter()
        # per sentence's own text
        speech = self._require("tts").synthesize(sentence, language="auto", voice=voice, speed=speed)
        timings["tts_s"] = timings.get("tts_s", 0.0) + time.perf_counter() - t0
        if photo is None:
            yield TurnEvent("chunk", sentence, None, label, {"audio": speech})
            return
        t1 = time.perf_counter()
        out = self.new_output_path(".mp4", chunk_dir)
        self.render(photo, speech, label, pose, background, size, enhance, out_path=out, start_frame=clock["frame"])
        clock["frame"] += n_frames(speech.duration_s)
        timings["render_s"] = timings.get("render_s", 0.0) + time.perf_counter() - t1
        yield TurnEvent("chunk", sentence, out, label, {"audio_s": speech.duration_s})

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
