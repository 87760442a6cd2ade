"""The real app served on 127.0.0.1 and driven through gradio_client with real inputs (no mocks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from avatar.core import media


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def _path(value) -> Path:
    if isinstance(value, dict):
        value = value.get("video") or value.get("path") or value.get("value")
        if isinstance(value, dict):
            value = value.get("path")
    return Path(value)


def test_transcribe_endpoint(client, speech_wav):
    text = client.predict(handle_file(str(speech_wav)), "auto", api_name="/transcribe")
    assert "fellow americans" in text.lower()


def test_speak_endpoint(client):
    wav = client.predict("Hello from the avatar.", "en", None, api_name="/speak")
    audio = media.load_audio(_path(wav), 16000)
    assert audio.duration_s > 0.8


def test_speak_speed(client):
    """The TTS tab's speed: faster speech is shorter; a speed out of range is refused with the range."""
    text = "Hello there, how are you today?"
    normal = media.load_audio(_path(client.predict(text, "en", None, 1.0, api_name="/speak")), 16000)
    fast = media.load_audio(_path(client.predict(text, "en", None, 1.6, api_name="/speak")), 16000)
    assert fast.duration_s < 0.8 * normal.duration_s
    with pytest.raises(Exception, match="maximum value 2"):  # Gradio's slider says it
        client.predict(text, "en", None, 3.0, api_name="/speak")


def test_a_client_chosen_session_hash_cannot_name_a_path(app_url, system):
    """The session folder comes from the client's session hash: a hash like ../../x must not write outside
    output_dir (it did before: files landed wherever the client pointed)."""
    client = Client(app_url, verbose=False)
    client.session_hash = "../../../escaped-session"
    client.predict("Hello.", "en", None, api_name="/speak")
    out = Path(system.output_dir).resolve()
    assert not any(out.parent.parent.glob("**/escaped-session"))
    written = [p for p in (out / "sessions").rglob("*.wav")]
    assert written and all(p.resolve().is_relative_to(out) for p in written)


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):  # Gradio 6 sends message content as a list of parts
        content = " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content


def test_chat_endpoint_replies(client):
    msgs, *_ = client.predict("Hi! My name is Alice.", api_name="/chat")
    assert msgs[-1]["role"] == "assistant" and _text(msgs[-1]).strip()
    assert _text(msgs[-2]) == "Hi! My name is Alice."


def test_bad_input_is_a_clear_error_and_app_survives(client, tmp_path):
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"not audio" * 200)
    with pytest.raises(Exception, match="not an audio file"):
        client.predict(handle_file(str(fake)), "auto", api_name="/transcribe")
    with pytest.raises(Exception, match="the text is empty"):
        client.predict("   ", "en", None, api_name="/speak")
    with pytest.raises(Exception, match="is not a choice"):  # Gradio itself checks the radio value
        client.predict("hello", "fr", None, api_name="/speak")
    assert client.predict("Still here.", "en", None, api_name="/speak")  # the app keeps serving


def test_matte_endpoint(client, astronaut_png):
    out = client.predict(handle_file(str(astronaut_png)), "#00ff00", api_name="/matte")
    img = media.load_image(_path(out))
    assert img.shape == (512, 512, 3)
    assert (np.abs(img[5, 5].astype(int) - [0, 255, 0]).sum() < 60)  # top-left corner is background -> green


def test_render_endpoint_returns_mp4_with_audio(client, astronaut_png, speech_wav):
    out = client.predict(handle_file(str(astronaut_png)), handle_file(str(speech_wav)), "happy", "talking",
                         "#2f6f4f", True, 256, False, api_name="/render")
    info = media.probe(_path(out))
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.fps == 25
    assert abs(info.video_duration_s - 4.4) < 0.05 and info.width == 256


def test_talk_endpoint_streams_chunks(client, astronaut_png):
    job = client.submit(None, "Tell me two short facts about the Moon.", handle_file(str(astronaut_png)),
                        "talking", "auto", "#2f6f4f", False, 256, False, "en", None, api_name="/talk")
    updates = list(job)
    final = job.result()
    chat = final[0]
    assert _text(chat[-2]) == "Tell me two short facts about the Moon." and _text(chat[-1]).strip()
    whole = _path(final[4])
    info = media.probe(whole)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.video_duration_s > 1.0
    assert len(updates) >= 3


def test_system_endpoint(client):
    table, report = client.predict(api_name="/system")
    assert "asr" in table and "head" in table and isinstance(report, dict)


def test_talk_in_chinese_with_an_english_only_model_speaks_the_notice(client, astronaut_png):
    """SmolLM2 only speaks English: a Chinese turn gets the plain Chinese notice, shown and spoken as video."""
    final = client.predict(None, "你好，今天天气怎么样？", handle_file(str(astronaut_png)), "talking", "auto",
                           "#2f6f4f", False, 256, False, "auto", None, api_name="/talk")
    chat = final[0]
    assert _text(chat[-2]) == "你好，今天天气怎么样？" and "只会说英语" in _text(chat[-1])
    info = media.probe(_path(final[4]))
    assert info.audio_codec == "aac" and info.video_duration_s > 1.0


def test_a_photo_with_several_faces_warns_which_one_talks(system, astronaut, monkeypatch):
    """prepare_face notes "2 faces found; using the largest"; the Render and Talk tabs show it (it was dropped)."""
    import app as app_module

    shown = []
    monkeypatch.setattr(app_module.gr, "Warning", lambda message: shown.append(message))
    two = np.concatenate([astronaut, astronaut[::2, ::2].repeat(2, 0).repeat(2, 1)], axis=1)  # 2 faces side by side
    face = app_module.AvatarApp(system).prepared_photo(two)
    assert face.warnings and shown == list(face.warnings) and "2 faces" in shown[0]
    app_module.AvatarApp(system).prepared_photo(astronaut)
    assert len(shown) == 1  # one face: nothing to say


def test_keep_the_conversation_as_text_and_video(app_url, astronaut_png):
    """Keep the conversation: nothing yet is a sentence; after a spoken turn and a chat turn the Markdown holds
    both exchanges and the MP4 is the session's reply video."""
    session = Client(app_url, verbose=False)  # its own session: its own history and videos
    with pytest.raises(Exception, match="empty"):
        session.predict(api_name="/export_text")
    with pytest.raises(Exception, match="no reply video"):
        session.predict(api_name="/export_video")
    turn = session.predict(None, "What is the capital of France?", handle_file(str(astronaut_png)), "talking", "auto",
                           "#2f6f4f", False, 256, False, "en", None, 1.3, api_name="/talk")
    session.predict("Thank you!", api_name="/chat")
    markdown = _path(session.predict(api_name="/export_text")).read_text(encoding="utf-8")
    assert "**You:** What is the capital of France?" in markdown and "**You:** Thank you!" in markdown
    assert markdown.count("**Avatar:**") == 2
    whole = media.probe(_path(session.predict(api_name="/export_video")))
    reply = media.probe(_path(turn[4]))
    assert whole.video_codec == "h264" and abs(whole.video_duration_s - reply.video_duration_s) < 0.2


def test_reply_videos_in_turn_order(tmp_path):
    import app as app_module

    for n in (10, 2, 1):
        (tmp_path / f"turn{n}").mkdir()
        (tmp_path / f"turn{n}" / "reply.mp4").write_bytes(b"x")
    (tmp_path / "turn3").mkdir()  # a turn that made no video
    assert [p.parent.name for p in app_module.reply_videos(tmp_path)] == ["turn1", "turn2", "turn10"]


def test_idle_loop_of_the_default_portrait(system):
    """The Talk tab's idle player: the default portrait at rest as a short MP4 (cached: the same file again); no
    photo, no clip."""
    import app as app_module

    talk = app_module.AvatarApp(system)
    portrait = talk._default_portrait()
    assert portrait and media.load_image(portrait).shape[2] == 3
    clip = talk.idle(portrait, 256, "#2f6f4f", False)
    info = media.probe(clip)
    assert info.width == 256 and abs(info.video_duration_s - system.config.head.idle_s) < 0.2
    assert talk.idle(portrait, 256, "#2f6f4f", False) == clip
    assert talk.idle(None, 256, "#2f6f4f", False) is None


def test_conversation_mode_speaks_at_the_talk_tabs_speed(system):
    """The hands-free replies get every Talk tab setting, the voice's speed too, as respond()'s own arguments."""
    import inspect

    import app as app_module

    options = app_module.AvatarApp(system).live_options(None, "talking", "auto", "#2f6f4f", False, 256, False, "en",
                                                        None, 1.4)
    assert options.settings["speed"] == 1.4
    inspect.signature(system.respond).bind(None, **options.settings)  # every key is one of respond()'s arguments
