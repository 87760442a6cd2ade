"""The workers' own code, without Ray: a render worker (talking head + matting + enhancement) and a speech worker
(ASR + TTS), each built from the config inside its replica. serve.py wraps them as deployments; tests call them
directly too."""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError
from avatar.core.cancel import stoppable
from avatar.core.types import Audio, ProgressFn
from avatar.render import render_clip

from .jobs import RenderJob, photo_key

log = logging.getLogger("avatar.cluster")

FACE_CACHE = 32  # prepared photos a render worker keeps
EnhanceFn = Callable[[np.ndarray], np.ndarray]


class RenderCancelled(AvatarError):
    """The request for a clip or a video went away (the session's Stop, or Ray cancelled it: a replica that died or
    shut down): the worker stopped between two frame batches. Not a core Cancelled, which only a session's own token
    raises, so a turn still reports a lost replica as a failure."""


class RenderWorker:
    """Talking head, matting and enhancement of one replica, loaded once; any session's clips."""

    def __init__(self, cfg: AvatarConfig) -> None:
        from avatar.enhance import Enhancer
        from avatar.head import load_head
        from avatar.matting import Matting

        t0 = time.perf_counter()
        self.cfg = cfg
        self.head = load_head(cfg)
        self.matting = Matting.load(cfg)
        enhancer = Enhancer.load(cfg)
        self.enhancer = enhancer if enhancer.backend != "off" else None
        self.enhance_note = getattr(enhancer, "fallback_reason", "")
        self.load_s = time.perf_counter() - t0
        self._faces: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def status(self) -> dict[str, dict]:
        """Backend, device and fallback reason of each stage the worker runs (the System tab shows them)."""
        def one(stage, note=""):
            return {"backend": getattr(stage, "backend", None) or getattr(stage, "name", "off"),
                    "device": getattr(stage, "device", "cpu"), "note": note or getattr(stage, "fallback_reason", "")}
        return {"head": one(self.head), "matting": one(self.matting),
                "enhance": one(self.enhancer) if self.enhancer else {"backend": "off", "device": "-",
                                                                    "note": self.enhance_note}}

    def prepare(self, image: np.ndarray) -> tuple[str, ...]:
        """Prepares (and checks) a photo once; its warnings. Raises NoFaceFound / FaceTooSmall / BadImage."""
        return self._face(photo_key(image), image).warnings

    def _face(self, key: str, image: np.ndarray):
        with self._lock:
            if key in self._faces:
                self._faces.move_to_end(key)
                return self._faces[key]
        face = self.head.prepare(image)
        with self._lock:
            self._faces[key] = face
            while len(self._faces) > FACE_CACHE:
                self._faces.popitem(last=False)
        return face

    def enhance_frames(self, frames: np.ndarray) -> np.ndarray:
        if self.enhancer is None:
            raise AvatarError(f"face enhancement is unavailable: {self.enhance_note or 'GFPGAN weights missing'}")
        return self.enhancer.enhance_faces(frames)

    def enhance_video(self, source: Path, out_path: Path, max_s: float | None = None,
                      progress: ProgressFn | None = None) -> Path:
        """A video file -> MP4 with every frame's faces enhanced, as AvatarSystem.enhance makes it in local mode."""
        if self.enhancer is None:
            self.enhance_frames(np.zeros((0, 8, 8, 3), np.uint8))  # raises the sentence saying why
        return self.enhancer.enhance_video(source, out_path, max_s, progress=progress)

    def render_to_file(self, job: RenderJob, out_path: Path, enhance_fn: EnhanceFn | None = None,
                       progress: ProgressFn | None = None, cancelled: threading.Event | None = None) -> Path:
        """The clip as AvatarSystem.render makes it in local mode. enhance_fn replaces this worker's own enhancement
        (the deployment's batched one); `cancelled` is checked between frame batches, and a cancelled clip leaves
        no file behind."""
        if job.enhance and self.enhancer is None:
            self.enhance_frames(np.zeros((0, 8, 8, 3), np.uint8))  # raises the sentence saying why
        face = self._face(job.face.key, job.face.image)

        report = stoppable(progress, cancelled, lambda: RenderCancelled("the clip was cancelled"))
        try:
            return render_clip(self.head, face, job.speech, job.emotion, job.pose, background=job.background,
                               size=job.size, matting=self.matting, out_path=out_path,
                               enhancer=(enhance_fn or self.enhance_frames) if job.enhance else None,
                               intensity=job.intensity, progress=report, start_frame=job.start_frame)
        except BaseException:
            Path(out_path).unlink(missing_ok=True)
            raise

    def matte(self, image: np.ndarray, colour: tuple[int, int, int] | None) -> np.ndarray:
        alpha = self.matting.alpha(image[None])
        if colour is None:
            return np.dstack([image, np.round(alpha[0] * 255).astype(np.uint8)])
        return self.matting.composite(image[None], alpha, colour)[0]

    def enhance_image(self, image: np.ndarray) -> np.ndarray:
        if self.enhancer is None:
            self.enhance_frames(np.zeros((0, 8, 8, 3), np.uint8))
        return self.enhancer.enhance_image(image)


class SpeechWorker:
    """ASR and TTS of one replica."""

    def __init__(self, cfg: AvatarConfig) -> None:
        from avatar.asr import Asr
        from avatar.tts import Tts

        self.asr = Asr.load(cfg)
        self.tts = Tts.load(cfg)

    def status(self) -> dict[str, dict]:
        return {name: {"backend": stage.backend, "device": getattr(stage, "device", "cpu"),
                       "note": getattr(stage, "fallback_reason", None) or "", "load_s": stage.load_s}
                for name, stage in (("asr", self.asr), ("tts", self.tts))}

    def transcribe(self, audio: Audio, language: str):
        return self.asr.transcribe(audio, language=language)

    def synthesize(self, text: str, language: str, voice: str | None, speed: float | None = None) -> Audio:
        return self.tts.synthesize(text, language=language, voice=voice, speed=speed)

    def voices(self) -> list[str]:
        return list(self.tts.voices())

    def sample_rate(self) -> int:
        return self.tts.sample_rate
