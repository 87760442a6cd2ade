"""The avatar before the first reply (issue 20): a default portrait, and an idle loop of any portrait."""
from __future__ import annotations

import numpy as np

from avatar.core import media
from avatar.portrait import breathing


def test_default_portrait_is_the_astronaut_written_once(system, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    path = system.default_portrait()
    assert path == tmp_path / "portraits" / "astronaut.png"
    image = media.load_image(path)
    assert image.shape == (512, 512, 3)
    mtime = path.stat().st_mtime_ns
    assert system.default_portrait() == path and path.stat().st_mtime_ns == mtime  # not rewritten
    system.prepare_photo(path)  # a face is found in it: it works as the Talk tab's portrait


def test_idle_loop_moves_a_little_and_is_cached(system, astronaut):
    clip = system.idle_clip(astronaut, 256)
    frames = np.concatenate(list(media.read_video(clip, batch=64))).astype(np.float32)
    seconds = system.config.head.idle_s
    assert abs(len(frames) - 25 * seconds) <= 1
    moved = (np.abs(frames - frames[0]).max(axis=3) > 20).sum(axis=(1, 2))  # pixels that changed visibly
    print(f"idle loop: {len(frames)} frames, at most {moved.max()} of {256 * 256} pixels changed by > 20 levels, "
          f"loop seam {np.abs(frames[-1] - frames[0]).mean():.2f} levels")
    assert moved.max() > 100  # blinks and glances: not a still image
    assert moved.max() < 0.1 * 256 * 256  # but the head stays at rest (no talking)
    blocks = frames.reshape(len(frames), 32, 8, 32, 8, 3).mean(axis=(2, 4))  # 8x8 means: codec noise averages out
    drift = np.abs(blocks - blocks[0]).mean(axis=(1, 2, 3)).max()  # how far the resting head wanders
    seam = np.abs(blocks[-1] - blocks[0]).mean()
    print(f"head drift {drift:.2f}, loop seam {seam:.2f} (block means)")
    assert seam < 0.5 * drift  # it loops without a jump: played one way only, the seam was the whole drift
    assert system.idle_clip(astronaut, 256) == clip  # cached: one render per portrait


def test_breathing_is_quiet_and_finite():
    audio = breathing(4.0)
    assert audio.duration_s == 4.0 and np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() < 0.02
