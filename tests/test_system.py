"""AvatarSystem end to end with the embedded backends: bad inputs leave history unchanged; a streamed turn yields
its video chunks as playable MP4s."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar.core import media
from avatar.core.errors import AudioTooLong, AudioTooShort, BadAudio, EmptyText, NoSpeech, TextTooLong, UnknownLanguage
from avatar.core.types import Audio


@pytest.fixture
def conversation(system):
    conv = system.new_conversation()
    conv.rounds.append(("Hello, I am Bob.", "Nice to meet you, Bob!"))
    return conv


def _wav(tmp_path, samples, name="a.wav", sr=16000):
    return media.save_wav(Audio(np.asarray(samples, np.float32), sr), tmp_path / name)


@pytest.mark.parametrize("case,error,message", [
    ("empty", BadAudio, "empty"),
    ("short", AudioTooShort, "at least 0.3 s"),
    ("silence", NoSpeech, "no speech heard"),
    ("not_audio", BadAudio, "not an audio file"),
    ("too_long", AudioTooLong, "maximum is 60 s"),
])
def test_bad_audio_turns_leave_history_unchanged(system, conversation, astronaut, tmp_path, case, error, message):
    sr = 16000
    if case == "empty":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif case == "short":
        path = _wav(tmp_path, 0.3 * np.sin(np.arange(int(0.2 * sr)) / 5))
    elif case == "silence":
        path = _wav(tmp_path, np.zeros(2 * sr))
    elif case == "not_audio":
        path = tmp_path / "renamed.wav"
        path.write_bytes(b"PK\x03\x04 definitely a zip, not a wav" * 40)
    else:
        path = _wav(tmp_path, 0.3 * np.sin(np.arange(61 * sr) / 5))
    before = list(conversation.rounds)
    with pytest.raises(error, match=message):
        list(system.respond(conversation, photo=astronaut, audio=str(path)))
    assert conversation.rounds == before


@pytest.mark.parametrize("text,language,error,message", [
    ("", "auto", EmptyText, "empty"),
    ("x" * 501, "auto", TextTooLong, "maximum is 500"),
    ("hello", "fr", UnknownLanguage, "unknown language"),
])
def test_bad_text_turns_leave_history_unchanged(system, conversation, text, language, error, message):
    before = list(conversation.rounds)
    with pytest.raises(error, match=message):
        list(system.respond(conversation, text=text, language=language))
    assert conversation.rounds == before


def test_streamed_turn_yields_playable_chunks_and_joins_the_history(system, astronaut, tmp_path):
    """(That the stages overlap, cancel and fail cleanly: tests/turn/test_pipeline.py.)"""
    conv = system.new_conversation()
    chunk_dir = tmp_path / "turn"
    seen = []
    for ev in system.respond(conv, photo=astronaut, text="Tell me two short facts about the Moon.", language="en",
                             emotion="happy", chunk_dir=chunk_dir):
        if ev.kind == "chunk":
            seen.append(ev.path.name)
            info = media.probe(ev.path)
            assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert len(seen) >= 2, f"expected several sentences, got {seen}"
    assert sorted(p.name for p in chunk_dir.iterdir()) == sorted(seen)
    assert len(conv.rounds) == 1 and conv.rounds[0][0] == "Tell me two short facts about the Moon."


def test_auto_emotion_is_reported(system, astronaut):
    conv = system.new_conversation()
    events = list(system.respond(conv, text="I am so happy today, I got the job!", language="en", emotion="auto"))
    mood = next(ev for ev in events if ev.kind == "mood")
    assert mood.text == "happy"  # the user's mood from the lexicon, passed to the chat model
    done = events[-1]
    assert done.kind == "done" and done.emotion in ("angry", "contempt", "disgusted", "fear", "happy", "neutral",
                                                    "sad", "surprised")


def test_done_event_says_whether_the_reply_joined_the_history(system):
    """The UI reads `notice` to decide what to show: the history (a real reply) or the fixed notice (not stored)."""
    conv = system.new_conversation()
    done = list(system.respond(conv, text="Say hello in three words.", language="en"))[-1]
    assert done.kind == "done" and done.data["notice"] is False and len(conv.rounds) == 1
    done = list(system.respond(conv, text="你好，今天天气怎么样？", language="zh"))[-1]
    assert done.data["notice"] is True and len(conv.rounds) == 1  # SmolLM2 is English-only: the notice is not stored


def test_matte_without_background_is_a_transparent_cut_out(system, astronaut):
    """background 'none' gives RGBA (alpha = the person), a colour gives RGB on that colour; both from one alpha."""
    cut = system.matte(astronaut, "none")
    green = system.matte(astronaut, "#00ff00")
    assert cut.shape == (*astronaut.shape[:2], 4) and green.shape == astronaut.shape
    alpha = cut[..., 3].astype(np.float32) / 255
    assert alpha.max() == 1.0 and alpha.min() == 0.0  # person and background both present
    assert np.array_equal(cut[..., :3], astronaut)
    background = alpha < 0.02
    assert np.abs(green[background].astype(int) - (0, 255, 0)).max() <= 6


def test_matte_downscales_a_photo_beyond_the_size_limit(system, astronaut):
    big = np.kron(astronaut, np.ones((9, 9, 1), np.uint8))  # 4608 px: over limits.max_image_side
    out = system.matte(big, "#ffffff")
    assert max(out.shape[:2]) <= system.config.limits.max_image_side


def test_enhance_chooses_video_by_its_streams_and_checks_its_length(system, tmp_path, monkeypatch):
    """An .m4v (or any container ffmpeg reads) is a video although its suffix is not .mp4; a still image is not;
    a video over the length limit is refused before any frame is enhanced."""
    calls = []

    class Recorder:
        def enhance_video(self, source, out, max_s=None, progress=None):
            calls.append(("video", Path(source).suffix))
            return out

        def enhance_image(self, image):
            calls.append(("image", image.shape))
            return image

    monkeypatch.setattr(system, "enhancer", Recorder())
    clip = media.write_video(tmp_path / "clip.mp4", [np.zeros((5, 32, 32, 3), np.uint8)])
    m4v = clip.rename(tmp_path / "clip.m4v")
    system.enhance(m4v, tmp_path / "out.mp4")
    system.enhance(media.save_png(np.zeros((40, 30, 3), np.uint8), tmp_path / "still.png"))
    assert calls == [("video", ".m4v"), ("image", (40, 30, 3))]
    monkeypatch.setattr(system, "config", system.config.replace(**{"limits.max_render_audio_s": 0.1}))
    with pytest.raises(AudioTooLong, match="video is"):
        system.enhance(m4v, tmp_path / "out2.mp4")
    assert len(calls) == 2


def test_the_system_tabs_download_commands_name_the_config_file(system, monkeypatch):
    monkeypatch.setattr(system, "config_path", "/srv/avatar/my config.toml")
    assert "--config '/srv/avatar/my config.toml'" in system.doctor()["download_command"]


def test_a_cancelled_render_stops_at_its_next_batch_and_leaves_no_file(system, astronaut, jfk_path, tmp_path):
    """The Video from audio tab's Stop: the token is set while the clip renders (here at its first progress report);
    the render raises Cancelled there instead of drawing the other batches, and its unfinished MP4 is removed."""
    from avatar.core.cancel import CancelToken
    from avatar.core.errors import Cancelled

    token, reports = CancelToken(), []

    def progress(fraction, text):
        reports.append(text)
        token.cancel()

    with pytest.raises(Cancelled, match="render was stopped"):
        system.render(astronaut, jfk_path, size=256, out_path=tmp_path / "clip.mp4", progress=progress,
                      cancel=token)
    assert len(reports) == 1 and not (tmp_path / "clip.mp4").exists()


def test_a_cancelled_video_enhancement_stops_and_leaves_no_file(system, tmp_path, monkeypatch):
    """The Enhance tab's Stop for a video: checked after every enhanced batch, the file goes."""
    from avatar.core.cancel import CancelToken
    from avatar.core.errors import Cancelled
    from avatar.enhance import Enhancer

    class Unchanged(Enhancer):  # the real video path (decode, batches, encode) with frames passed through
        def enhance_frames(self, batches):
            yield from batches

    monkeypatch.setattr(system, "enhancer", Unchanged("gfpgan", batch_size=2))
    clip = media.write_video(tmp_path / "clip.mp4", [np.zeros((6, 32, 32, 3), np.uint8)])
    token, reports = CancelToken(), []
    out = system.enhance(clip, tmp_path / "out.mp4", progress=lambda f, text: reports.append(text))
    assert reports[-1] == "enhanced 6/6 frames" and media.probe(out).n_frames == 6

    def stop_after_first(fraction, text):
        reports.append(text)
        token.cancel()

    reports.clear()
    with pytest.raises(Cancelled, match="enhancement was stopped"):
        system.enhance(clip, tmp_path / "stopped.mp4", progress=stop_after_first, cancel=token)
    assert reports == ["enhanced 2/6 frames"] and not (tmp_path / "stopped.mp4").exists()

    late = CancelToken()  # Stop after the last batch, while the file is encoded: the finished file goes too
    with pytest.raises(Cancelled, match="enhancement was stopped"):
        system.enhance(clip, tmp_path / "late.mp4", cancel=late,
                       progress=lambda f, text: text.startswith("enhanced 6/") and late.cancel())
    assert not (tmp_path / "late.mp4").exists()
