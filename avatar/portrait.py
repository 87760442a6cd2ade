"""The avatar before the first reply: a default portrait, and a short idle loop of any portrait (the head at rest:
breathing, blinks, glances) shown while a reply is being made instead of an empty player.

    path = default_portrait(cfg)             # a PNG, made once in the cache folder (None when configured off)
    clip = IdleLoops(system).clip(photo)     # an MP4 of cfg.head.idle_s seconds, cached per photo, size, colour
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from avatar.core import media
from avatar.core.config import AvatarConfig
from avatar.core.errors import BadImage
from avatar.core.paths import default_cache_dir
from avatar.core.types import Audio

IDLE_POSE = "still"  # the idle loop's head motion: at rest (blinks, saccades, breathing come from the engine)
BREATH_HZ = 0.25  # one breath every 4 s: the quiet "speech" that moves the idle face a little


def default_portrait(cfg: AvatarConfig) -> Path | None:
    """The configured default portrait as a file the UI can show: "astronaut" is written once from scikit-image's
    copy (NASA, public domain); a path is checked; "" means none."""
    name = (cfg.head.default_portrait or "").strip()
    if not name:
        return None
    if name != "astronaut":
        path = Path(name).expanduser()
        if not path.is_file():
            raise BadImage(f"head.default_portrait {name!r} is not a file")
        return path
    path = default_cache_dir() / "portraits" / "astronaut.png"
    if not path.is_file():
        from skimage import data

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.png")
        media.save_png(data.astronaut(), tmp)
        tmp.replace(path)  # two processes starting at once never read half a file
    return path


def breathing(seconds: float, sample_rate: int = 16000) -> Audio:
    """Near-silent audio whose loudness swells once per breath: the lite engine reads loudness as mouth motion, so
    the closed lips move by a hair, as a person at rest does; EAT sees silence."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.002 * (1 - np.cos(2 * np.pi * BREATH_HZ * t)) / 2
    noise = np.random.default_rng(0).standard_normal(t.size)
    return Audio((envelope * noise).astype(np.float32), sample_rate)


class IdleLoops:
    """Idle clips rendered by the system's own render path, cached by photo content, size and background."""

    def __init__(self, system) -> None:
        self.system = system
        self._clips: dict[tuple, Path] = {}
        self._lock = threading.Lock()

    def clip(self, photo, size: int | None = None, background=None) -> Path:
        image = photo if isinstance(photo, np.ndarray) else media.load_image(photo)
        key = (hashlib.sha1(image.tobytes()).hexdigest(), size, str(background))
        with self._lock:
            cached = self._clips.get(key)
            if cached is not None and cached.is_file():
                return cached
            seconds = self.system.config.head.idle_s / 2  # played forwards then backwards: a seamless loop
            once = self.system.render(image, breathing(seconds), "neutral", IDLE_POSE, background, size,
                                      out_path=self.system.new_output_path(".mp4", self._folder()))
            frames = np.concatenate(list(media.read_video(once, batch=64)))
            once.unlink(missing_ok=True)
            out = media.write_video(self.system.new_output_path(".mp4", self._folder()), [frames, frames[::-1]])
            self._clips[key] = out
            return out

    def _folder(self) -> Path:
        return self.system.output_dir / "idle"
