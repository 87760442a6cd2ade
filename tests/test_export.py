"""Keeping a conversation (issue 20): Markdown of the exchanges, the session's reply videos as one MP4."""
from __future__ import annotations

import numpy as np
import pytest

from avatar.core import media
from avatar.core.errors import AvatarError
from avatar.core.types import Audio
from avatar.export import NothingToExport, conversation_markdown


def test_markdown_keeps_every_exchange_in_order_and_marks_the_interrupted_one():
    rounds = [("Hello! <b>hi</b>", "Hi there, *friend*."), ("你好", "你好！很高兴认识你 …[interrupted]")]
    text = conversation_markdown(rounds)
    assert text.index("Hello!") < text.index("你好")
    assert "\\<b\\>hi\\</b\\>" in text and "\\*friend\\*" in text  # shown literally, not as markup
    assert "_(interrupted here)_" in text and "[interrupted]" not in text
    with pytest.raises(NothingToExport):
        conversation_markdown([])


def test_reply_videos_join_into_one_mp4(system, astronaut, speech_wav, tmp_path):
    speech = media.load_audio(speech_wav, 16000)
    clips = [Audio(speech.samples[a:b].copy(), 16000) for a, b in ((0, 16000), (16000, 40000))]
    videos = [system.render(astronaut, c, "neutral", "still", None, 256, out_path=tmp_path / f"r{i}.mp4")
              for i, c in enumerate(clips)]
    joined = system.export_video(videos + [tmp_path / "deleted-after-ttl.mp4"], tmp_path)
    parts = [media.probe(v) for v in videos]
    whole = media.probe(joined)
    assert whole.n_frames == sum(p.n_frames for p in parts)
    assert abs(whole.audio_duration_s - sum(p.n_frames for p in parts) / 25) < 0.1
    first = next(media.read_video(joined, batch=1))[0].astype(np.float32)
    assert np.abs(first - next(media.read_video(videos[0], batch=1))[0]).mean() < 1  # copied, not re-encoded


def test_replies_of_different_sizes_are_refused_with_a_sentence(system, astronaut, tmp_path):
    clip = Audio(np.zeros(8000, np.float32), 16000)
    videos = [system.render(astronaut, clip, "neutral", "still", None, s, out_path=tmp_path / f"{s}.mp4")
              for s in (256, 512)]
    with pytest.raises(AvatarError, match="different sizes"):
        system.export_video(videos, tmp_path)
    with pytest.raises(NothingToExport):
        system.export_video([], tmp_path)


def test_markdown_file(system, tmp_path):
    path = system.export_markdown([("Hi", "Hello.")], tmp_path)
    assert path.suffix == ".md" and "**Avatar:** Hello." in path.read_text(encoding="utf-8")
