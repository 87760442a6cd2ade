"""The pipelined turn with the real embedded stages (SmolLM2, Piper, the lite head, selfie matting, ffmpeg): stages
overlap, one cancel token stops every worker and leaves no half-written file, a failing stage ends the turn with its
message and the history as it was, and interrupted() keeps only what was heard, marked.

Assertions are on events, threads, files and history, never on wall time (the freed_s figure is the benchmark's)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from avatar.core import media
from avatar.core.cancel import CancelToken
from avatar.core.errors import BackendError
from avatar.head import n_frames
from avatar.turn.events import INTERRUPTED_MARK

QUESTION = "Tell me two short facts about the Moon."  # greedy SmolLM2 answers it in four or more chunks
WAIT_S = 120.0  # liveness only: a gate that is never opened fails the test instead of hanging it


@pytest.fixture
def conv(system):
    conv = system.new_conversation()
    conv.add("Hello, I am Bob.", "Nice to meet you, Bob!")
    return conv


@pytest.fixture
def face(system, astronaut):
    return system.prepare_photo(astronaut)


def _turn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("turn-") and t.is_alive()]


def _wrap_stages(monkeypatch, system, change):
    """Lets a test change the stages one turn is built from (spies, gates, injected faults)."""
    build = system._turn_stages

    def stages(opts, face):
        built = build(opts, face)
        change(built)
        return built

    monkeypatch.setattr(system, "_turn_stages", stages)


def test_the_chat_and_tts_work_on_the_next_chunk_while_the_head_renders_one(system, conv, face, monkeypatch):
    """Chunk 0's frames are held until the TTS has spoken chunk 1: possible only when the chat model and the TTS
    keep going while the head works (one generator running the stages one after another never gets there)."""
    second_speech = threading.Event()

    def change(stages):
        speak, frames = stages.speak, stages.frames
        spoken = []

        def spy(text):
            audio = speak(text)
            spoken.append(text)
            if len(spoken) == 2:
                second_speech.set()
            return audio

        def gated(speech, emotion, start_frame):
            if start_frame == 0:
                assert second_speech.wait(WAIT_S), "the TTS never reached chunk 1 while chunk 0 was rendering"
            yield from frames(speech, emotion, start_frame)

        stages.speak, stages.frames = spy, gated

    _wrap_stages(monkeypatch, system, change)
    events = list(system.respond(conv, photo=face, text=QUESTION, language="en", emotion="happy"))
    chunks = [ev for ev in events if ev.kind == "chunk"]
    assert len(chunks) >= 2 and [ev.data["index"] for ev in chunks] == list(range(len(chunks)))
    assert events[-1].kind == "done" and conv.rounds[-1][0] == QUESTION


def test_chunks_continue_one_clock_and_carry_what_the_media_asks_for(system, conv, face, monkeypatch, tmp_path):
    starts = []

    def change(stages):
        frames = stages.frames
        stages.frames = lambda speech, emotion, start: starts.append((start, n_frames(speech.duration_s))) or \
            frames(speech, emotion, start)

    _wrap_stages(monkeypatch, system, change)
    events = list(system.respond(conv, photo=face, text=QUESTION, language="en", size=256, media="both",
                                 chunk_dir=tmp_path))
    chunks = [ev for ev in events if ev.kind == "chunk"]
    assert [s for s, _ in starts] == list(np.cumsum([0] + [n for _, n in starts[:-1]]))  # head motion continues
    for ev, (_, n) in zip(chunks, starts):
        assert ev.data["frames"].shape == (n, 256, 256, 3) and ev.data["frames"].dtype == np.uint8
        assert n == n_frames(ev.data["audio"].duration_s)
        info = media.probe(ev.path)
        assert info.video_codec == "h264" and info.audio_codec == "aac" and ev.path.parent == tmp_path
    assert {p.name for p in tmp_path.iterdir()} == {ev.path.name for ev in chunks}
    for chunk in chunks:  # raw frames went out batch by batch before their chunk was complete
        batches = [ev for ev in events if ev.kind == "frames" and ev.data["index"] == chunk.data["index"]]
        assert np.array_equal(np.concatenate([ev.data["frames"] for ev in batches]), chunk.data["frames"])
        assert [ev.data["first_frame"] for ev in batches] == list(np.cumsum([0] + [len(ev.data["frames"])
                                                                              for ev in batches[:-1]]))
        position = {id(ev): i for i, ev in enumerate(events)}
        assert position[id(batches[-1])] < position[id(chunk)]
    audio_events = [ev for ev in events if ev.kind == "audio"]
    assert [ev.data["index"] for ev in audio_events] == [ev.data["index"] for ev in chunks]
    assert all(a.data["t"] <= c.data["t"] for a, c in zip(audio_events, chunks))  # speech is out before its frames


def test_raw_media_writes_no_file_and_a_turn_without_photo_speaks_only(system, conv, face, tmp_path):
    events = list(system.respond(conv, photo=face, text="Say hello in five words.", language="en", media="raw",
                                 chunk_dir=tmp_path))
    chunks = [ev for ev in events if ev.kind == "chunk"]
    assert chunks and all(ev.path is None and ev.data["frames"] is not None for ev in chunks)
    assert not list(tmp_path.iterdir())
    events = list(system.respond(conv, text="Say hello in five words.", language="en"))
    chunks = [ev for ev in events if ev.kind == "chunk"]
    assert chunks and all(ev.path is None and ev.data["frames"] is None and ev.data["audio"].duration_s > 0.3
                          for ev in chunks)


def test_cancel_mid_chunk_frees_every_worker_leaves_no_partial_file_and_no_history(system, conv, face,
                                                                                   monkeypatch, tmp_path):
    """Cancelled while chunk 0's encoder has written some frames (its MP4 is half made) and the chat model is still
    generating: the turn ends with an "interrupted" event, no worker thread is left, no file is left behind."""
    token, before = CancelToken(), list(conv.rounds)

    def change(stages):
        frames = stages.frames

        def cancel_mid_chunk(speech, emotion, start):
            for i, batch in enumerate(frames(speech, emotion, start)):
                yield batch
                if i == 1:
                    token.cancel("interrupted")

        stages.frames = cancel_mid_chunk

    _wrap_stages(monkeypatch, system, change)
    events = list(system.respond(conv, photo=face, text=QUESTION, language="en", chunk_dir=tmp_path, cancel=token))
    last = events[-1]
    assert last.kind == "interrupted" and last.data["reason"] == "interrupted" and last.text == ""
    assert not [ev for ev in events if ev.kind in ("chunk", "done")]
    assert _turn_threads() == []
    assert list(tmp_path.iterdir()) == []  # neither the partial MP4 nor a finished one
    assert conv.rounds == before


def test_a_consumer_that_stops_reading_stops_the_turn(system, conv, face, tmp_path):
    before = list(conv.rounds)
    turn = system.respond(conv, photo=face, text=QUESTION, language="en", chunk_dir=tmp_path)
    first = next(ev for ev in turn if ev.kind == "chunk")
    turn.close()  # Gradio dropping a cancelled generator, a client that went away
    assert _turn_threads() == []
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]
    assert conv.rounds == before


def test_interrupted_keeps_only_what_was_heard(system, conv, face):
    before = list(conv.rounds)
    token = CancelToken()
    heard = []
    for ev in system.respond(conv, photo=face, text=QUESTION, language="en", cancel=token):
        if ev.kind == "chunk":
            heard.append(ev.text)
            token.cancel("interrupted")
    assert conv.rounds == before  # cancelled: nothing stored by the turn itself
    assert system.interrupted(conv, heard[0])
    assert conv.rounds == before + [(QUESTION, heard[0] + INTERRUPTED_MARK)]
    assert not system.interrupted(conv, "more")  # once per turn


def test_interrupting_a_finished_turn_replaces_or_removes_its_round(system, conv):
    before = list(conv.rounds)
    done = list(system.respond(conv, text=QUESTION, language="en"))[-1]
    assert conv.rounds == before + [(QUESTION, done.text)]  # the whole reply joined the history
    assert system.interrupted(conv, "The Moon")  # the reply was still playing when the user spoke
    assert conv.rounds == before + [(QUESTION, "The Moon" + INTERRUPTED_MARK)]
    list(system.respond(conv, text=QUESTION, language="en"))
    assert system.interrupted(conv, "")  # nothing of it was heard: as if it had not been said
    assert conv.rounds == before + [(QUESTION, "The Moon" + INTERRUPTED_MARK)]
    token = CancelToken()
    token.cancel("interrupted")
    assert list(system.respond(conv, text=QUESTION, language="en", cancel=token))[-1].kind == "interrupted"
    assert not system.interrupted(conv, "")  # cancelled before anything was said: the history stays
    assert len(conv.rounds) == len(before) + 1


@pytest.mark.parametrize("fault", ["tts", "oom"])
def test_a_stage_failing_mid_turn_ends_it_with_a_sentence_and_the_next_turn_works(system, conv, face, monkeypatch,
                                                                                  tmp_path, fault):
    import torch

    before = list(conv.rounds)

    def change(stages):
        speak, frames = stages.speak, stages.frames
        calls = []

        def failing_speak(text):
            calls.append(text)
            if len(calls) == 2:
                raise BackendError("the GPT-SoVITS server went away")
            return speak(text)

        def oom_frames(speech, emotion, start):
            yield from frames(speech, emotion, start)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        if fault == "tts":
            stages.speak = failing_speak
        else:
            stages.frames = oom_frames

    with monkeypatch.context() as m:
        _wrap_stages(m, system, change)
        message = "went away" if fault == "tts" else "ran out of memory during this turn"
        with pytest.raises(BackendError, match=message):
            list(system.respond(conv, photo=face, text=QUESTION, language="en", chunk_dir=tmp_path))
    assert _turn_threads() == [] and conv.rounds == before
    assert not list(tmp_path.glob("*.partial.*"))
    done = list(system.respond(conv, photo=face, text="Say hello in five words.", language="en"))[-1]
    assert done.kind == "done" and len(conv.rounds) == len(before) + 1


def test_a_chat_server_that_goes_away_mid_reply(system, conv, monkeypatch):
    """A real socket server that streams two tokens of a reply and then closes the connection."""
    import re
    import socket

    from avatar.chat import ChatModel
    from avatar.chat.openai import OpenAIChatBackend

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def read_request(client):  # all of it: closing a socket with unread bytes would reset the connection
        data = b""
        while b"\r\n\r\n" not in data:
            data += client.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            body += client.recv(65536)

    def serve_half_a_reply():
        client, _ = listener.accept()
        read_request(client)
        body = "".join(f'data: {{"choices":[{{"delta":{{"content":"{w}"}}}}]}}\n\n' for w in ("Hello", " there,",
                                                                                           " my friend"))
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + body.encode())
        client.shutdown(socket.SHUT_WR)
        client.close()

    threading.Thread(target=serve_half_a_reply, daemon=True).start()
    backend = OpenAIChatBackend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "m", timeout_s=10)
    before = list(conv.rounds)
    monkeypatch.setattr(system, "chat_model", ChatModel(backend, system.config))
    with pytest.raises(BackendError, match="closed the stream"):
        list(system.respond(conv, text="Hi!", language="en"))
    listener.close()
    monkeypatch.undo()
    assert _turn_threads() == [] and conv.rounds == before
    assert list(system.respond(conv, text="Say hi.", language="en"))[-1].kind == "done"


def test_cheap_checks_fail_before_any_model_work(system, conv, face, monkeypatch):
    from avatar.core.errors import AvatarError

    monkeypatch.setattr(system, "transcribe", lambda *a, **k: pytest.fail("ASR ran before the options were checked"))
    monkeypatch.setattr(system, "chat", lambda *a, **k: pytest.fail("chat ran before the options were checked"))
    for bad in ({"background": "#zz"}, {"enhance": True}, {"size": 300}, {"emotion": "grumpy"}, {"language": "fr"}):
        with pytest.raises(AvatarError):
            list(system.respond(conv, photo=face, audio="question.wav", **bad))
