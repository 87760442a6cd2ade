"""render_clip end to end: real photo, real speech -> MP4 (H.264 + AAC, 25 fps), checked by decoding it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from avatar.core.config import AvatarConfig
from avatar.core.errors import UnknownEmotion, UnknownPose
from avatar.head.lite import LiteEngine
from avatar.matting import Matting
from avatar.core.media import load_audio, probe, read_video
from avatar.head.poses import load_pose
from avatar.render import render_clip
from avatar.head import n_frames
from avatar.core.types import Audio
from tests.head.test_lite import SAMPLE_RATE, SPEECH, energy_envelope_db, mouth_opening, track

GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def engine() -> LiteEngine:
    return LiteEngine(size=256)


@pytest.fixture(scope="module")
def face(engine):
    return engine.prepare(data.astronaut())


@pytest.fixture(scope="module")
def matting(tmp_path_factory) -> Matting:
    return Matting.load(AvatarConfig(weights_dir=str(tmp_path_factory.mktemp("no-weights"))))


def assert_mp4_matches(path: Path, speech: Audio, size: int) -> None:
    info = probe(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.fps == 25 and (info.width, info.height) == (size, size)
    assert info.n_frames == n_frames(speech.duration_s)
    assert abs(info.video_duration_s - speech.duration_s) <= 0.040
    assert abs(info.audio_duration_s - speech.duration_s) <= 0.040


def decode(path: Path) -> np.ndarray:
    return np.concatenate(list(read_video(path)))


def test_english_clip_keeps_the_photo_background(engine, face, artifacts):
    speech = load_audio(SPEECH / "jfk.flac", SAMPLE_RATE)
    progress: list[float] = []
    out = render_clip(engine, face, speech, "happy", "talking", background=None, size=256, matting=None,
                      out_path=artifacts / "jfk_happy.mp4", progress=lambda f, _: progress.append(f))
    assert_mp4_matches(out, speech, 256)
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    first = decode(out)[0]
    assert np.abs(first[:12, :12].astype(int) - face.crop[:12, :12]).mean() < 6  # backdrop kept (after H.264)


def test_chinese_clip_on_green_with_lip_sync_in_the_video(engine, face, matting, artifacts):
    speech = load_audio(SPEECH / "asr_example_zh.wav", SAMPLE_RATE)
    out = render_clip(engine, face, speech, "sad", load_pose("nod", n_frames(speech.duration_s)), background=GREEN,
                      size=256, matting=matting, out_path=artifacts / "zh_sad_green.mp4")
    assert_mp4_matches(out, speech, 256)
    frames = decode(out)
    corners = np.concatenate([frames[:, :16, :16].reshape(-1, 3), frames[:, :16, -16:].reshape(-1, 3)])
    assert np.abs(corners.astype(int) - GREEN).mean() < 12  # the backdrop is replaced
    opening = mouth_opening(track(frames))
    r = np.corrcoef(opening, energy_envelope_db(speech.samples, len(frames)))[0, 1]
    print(f"decoded video lip sync: Pearson r = {r:.3f} (limit 0.6)")
    assert r >= 0.6, f"decoded video: mouth opening vs energy envelope r = {r:.3f}"


def test_size_and_enhancer_apply_after_the_engine(engine, face, matting, tmp_path):
    import cv2

    def upscale_2x(frames: np.ndarray) -> np.ndarray:  # an enhancer is any frames -> frames callable
        return np.stack([cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for f in frames])

    speech = Audio(load_audio(SPEECH / "jfk.flac", SAMPLE_RATE).samples[: 2 * SAMPLE_RATE], SAMPLE_RATE)
    small = render_clip(engine, face, speech, "neutral", "still", GREEN, 128, matting, tmp_path / "small.mp4")
    assert_mp4_matches(small, speech, 128)
    big = render_clip(engine, face, speech, "neutral", "still", None, 256, None, tmp_path / "big.mp4",
                      enhancer=upscale_2x)
    assert_mp4_matches(big, speech, 512)


def test_bad_requests_fail_before_writing(engine, face, tmp_path):
    speech = Audio(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.raises(UnknownEmotion):
        render_clip(engine, face, speech, "bored", "talking", out_path=tmp_path / "a.mp4")
    with pytest.raises(UnknownPose):
        render_clip(engine, face, speech, "happy", "moonwalk", out_path=tmp_path / "b.mp4")
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


@pytest.mark.slow
def test_ten_minute_render_in_constant_memory(engine, face, matting, tmp_path):
    """Full 10-minute clip through render_clip with matting: RSS after 10% and at the end differ little."""
    jfk = load_audio(SPEECH / "jfk.flac", SAMPLE_RATE)
    speech = Audio(np.tile(jfk.samples, 55)[: 600 * SAMPLE_RATE], SAMPLE_RATE)
    rss: dict[str, float] = {}

    def note(fraction: float, _: str) -> None:
        if fraction >= 0.1 and "early" not in rss:
            rss["early"] = _rss_mb()
        rss["late"] = _rss_mb()

    out = render_clip(engine, face, speech, "happy", "talking", GREEN, 256, matting, tmp_path / "ten.mp4",
                      progress=note)
    assert_mp4_matches(out, speech, 256)
    assert rss["late"] - rss["early"] < 30, f"RSS grew from {rss['early']:.0f} to {rss['late']:.0f} MB"


@pytest.mark.parametrize("pose_kind", ["name", "sequence"])
def test_start_frame_reaches_the_engine_for_names_and_sequences(engine, face, tmp_path, monkeypatch, pose_kind):
    """A reply's later sentence: the pose (by name) starts 40 frames in, and so do the blinks (sequence or name)."""
    import avatar.render as render_module

    seen = []

    def capture(engine, face, speech, emotion, sequence, *rest):
        seen.append(sequence)
        yield np.zeros((n_frames(speech.duration_s), 64, 64, 3), np.uint8)

    monkeypatch.setattr(render_module, "composited_frames", capture)
    speech = Audio(np.zeros(16000, np.float32), 16000)
    pose = "talking" if pose_kind == "name" else load_pose("talking", n_frames(1.0))
    render_clip(engine, face, speech, "neutral", pose, out_path=tmp_path / "c.mp4", start_frame=40)
    assert seen[0].start_frame == 40
    if pose_kind == "name":
        assert np.array_equal(seen[0].angles_deg, load_pose("talking", 65).angles_deg[40:])
