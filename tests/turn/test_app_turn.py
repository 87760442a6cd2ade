"""The Talk tab's turn handling in the real app: API clients get playable MP4 chunks, Stop and Clear leave history
and players consistent, a cancelled API turn leaves the history, timings are per session, one client cannot fill the
queue. Handlers are driven directly (Stop races a running turn) or through gradio_client against the served app."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

from avatar.core import media
from avatar.turn.events import INTERRUPTED_MARK

QUESTION = "Tell me two short facts about the Moon."
TALK_ARGS = ("talking", "auto", "#2f6f4f", False, 256, False, "en", None, 1.0)


def _path(value) -> Path | None:
    if isinstance(value, dict):
        value = value.get("video") or value.get("path") or value.get("value")
        if isinstance(value, dict):
            value = value.get("path")
    return Path(value) if value else None


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        content = " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content


def _turn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("turn-") and t.is_alive()]


@pytest.fixture
def app(system):
    import app as app_module

    return app_module.AvatarApp(system)


def _talk_until_first_chunk(app, state, request, astronaut_png):
    """Runs app.talk on a thread; returns (thread, the outputs seen, an event set at the first chunk)."""
    seen, first_chunk = [], threading.Event()

    def run():
        for out in app.talk(None, QUESTION, str(astronaut_png), *TALK_ARGS, state, request):
            seen.append(out)
            if isinstance(out[5], str):
                first_chunk.set()
        first_chunk.set()  # also when the turn ended without a chunk: the test then fails on its assertions

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen, first_chunk


def test_stop_keeps_the_heard_part_marked_and_empties_the_stream_player(app, system, astronaut_png):
    request = SimpleNamespace(session_hash="stop-test")
    state = app.session(None, request)
    thread, seen, first_chunk = _talk_until_first_chunk(app, state, request, astronaut_png)
    assert first_chunk.wait(180)
    chat, video, full = app.stop(state, request)
    thread.join(30)
    assert not thread.is_alive() and _turn_threads() == []
    heard = [o[5] for o in seen if isinstance(o[5], str)]
    assert _text(chat[-2]) == QUESTION and _text(chat[-1]).endswith(INTERRUPTED_MARK.strip())
    assert len(state.conversation.rounds) == 1 and state.conversation.rounds[0][1].endswith(INTERRUPTED_MARK)
    assert video is None  # the stream player stops; the whole-reply player holds exactly what was played
    assert media.probe(full).video_duration_s == pytest.approx(
        sum(media.probe(p).video_duration_s for p in heard), abs=0.1)
    reply_mp4s = [o[4] for o in seen if isinstance(o[4], str)]
    assert reply_mp4s == []  # the stopped turn never offered its own whole reply


def test_clear_during_a_turn_keeps_the_history_empty(app, astronaut_png):
    request = SimpleNamespace(session_hash="clear-test")
    state = app.session(None, request)
    state.conversation.add("Hello, I am Bob.", "Nice to meet you, Bob!")
    thread, _, first_chunk = _talk_until_first_chunk(app, state, request, astronaut_png)
    assert first_chunk.wait(180)
    chat, video, full, state = app.clear_talk(state, request)
    thread.join(30)
    assert not thread.is_alive() and chat == [] and video is None and full is None
    assert state.conversation.rounds == []  # the stopped turn's reply did not come back


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def test_api_clients_get_each_chunk_as_a_playable_mp4(client, astronaut_png):
    job = client.submit(None, QUESTION, handle_file(str(astronaut_png)), *TALK_ARGS, api_name="/talk")
    updates = list(job)
    chunks = [_path(u[5]) for u in updates if _path(u[5]) is not None]
    assert len(chunks) >= 2
    for chunk in chunks:
        info = media.probe(chunk)  # downloaded by gradio_client: served and playable
        assert info.video_codec == "h264" and info.audio_codec == "aac" and info.video_duration_s > 0.3
    assert _path(job.result()[4]) is not None


def test_a_cancelled_api_turn_leaves_the_history_and_the_server_free(app_url, astronaut_png):
    client = Client(app_url, verbose=False)
    job = client.submit(None, "Please tell me a long story about a dragon.", handle_file(str(astronaut_png)),
                        *TALK_ARGS, api_name="/talk")
    for update in job:
        if _path(update[5]) is not None:
            break
    job.cancel()
    msgs, *_ = client.predict("Hi! My name is Alice.", api_name="/chat")  # answered: nothing holds the server
    assert [_text(m) for m in msgs[:-1]] == ["Hi! My name is Alice."]  # the cancelled round is not there
    assert _turn_threads() == []


def test_last_turn_timings_belong_to_the_session(app_url, astronaut_png):
    talker, other = Client(app_url, verbose=False), Client(app_url, verbose=False)
    talker.predict(None, "Say hello.", handle_file(str(astronaut_png)), *TALK_ARGS, api_name="/talk")
    assert "first_audio_s" in talker.predict(api_name="/system")[0]
    assert "none yet" in other.predict(api_name="/system")[0]


def test_one_client_cannot_fill_the_queue(app_url, system):
    greedy, other = Client(app_url, verbose=False), Client(app_url, verbose=False)
    jobs = [greedy.submit("Count to three.", api_name="/chat") for _ in range(40)]
    msgs, *_ = other.predict("Hello there!", api_name="/chat")  # before: "queue is full" behind 32 of greedy's
    assert _text(msgs[-1]).strip()
    refused = 0
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 - gradio_client raises its own error types
            refused += "too many requests" in str(e) or "429" in str(e)
    assert refused >= 40 - system.config.turn.max_jobs_per_session - 4  # a few may have ended before later joins


def test_a_closed_transcription_request_stops_the_work(app, monkeypatch, tmp_path, jfk_path):
    """Closing the handler's generator (what Gradio does to a cancelled request) cancels the transcription: Whisper
    stops at its next segment instead of transcribing the whole 55 s clip with its lock held."""
    import numpy as np

    import avatar.asr.whisper as whisper
    from avatar.core.errors import Cancelled
    from avatar.core.types import Audio

    clip = media.load_audio(jfk_path, 16000)
    path = media.save_wav(Audio(np.tile(clip.samples, 5)[: 55 * 16000], 16000), tmp_path / "long.wav")
    checks, stopped = [], threading.Event()
    real_checked = whisper._checked

    def spy(text, cancel):
        checks.append(text)
        try:
            return real_checked(text, cancel)
        except Cancelled:
            stopped.set()
            raise

    monkeypatch.setattr(whisper, "_checked", spy)
    request = app.transcribe(str(path), "en")
    next(request)  # running: the handler yields while Whisper works
    request.close()
    assert stopped.wait(120), f"the transcription ran on ({len(checks)} segments)"
    for thread in [t for t in threading.enumerate() if t.name == "turn-call"]:
        thread.join(60)
    assert whisper_lock_free(app.system)


def whisper_lock_free(system) -> bool:
    lock = system.asr._whisper._lock
    if lock.acquire(timeout=60):
        lock.release()
        return True
    return False
