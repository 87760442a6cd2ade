"""Backend "openai" against a real OpenAI-compatible server: `transformers serve` (transformers' own FastAPI server;
its [serving] extra needs the `openai` package) running the packaged SmolLM2 in a subprocess.

`transformers serve` cannot serve the GGUF file directly (the GGUF config has no `architectures`), so the module
fixture de-quantizes it once into a safetensors folder under pytest's tmp dir.
"""
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from avatar.chat import ChatModel, ChatRequest, GenerationParams, load_smollm2
from avatar.core.config import AvatarConfig
from avatar.core.errors import BackendError, BackendUnavailable
from avatar.chat.openai import OpenAIChatBackend, _sse_deltas

pytestmark = pytest.mark.slow
SERVER_START_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smollm2_folder() -> Path:
    """The embedded GGUF model as a plain transformers folder: load_smollm2() converts it once and keeps it in the
    cache (fp32 safetensors + tokenizer + chat template), which `transformers serve` can read."""
    from avatar.chat.smollm2 import smollm2_cache

    load_smollm2()
    return smollm2_cache()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = _smollm2_folder()
    port = _free_port()
    cli = Path(sys.executable).parent / "transformers"
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, log_path)
        yield {"base_url": base_url, "model": str(folder)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"transformers serve did not start in {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")


def _request(query="Say hello to me in one short sentence.", history=(), max_new_tokens=12):
    return ChatRequest("You are a friendly assistant.", tuple(history), query,
                       GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0))


def _config(base_url: str, model: str, **chat) -> AvatarConfig:
    changes = {"chat.backend": "openai", "chat.openai_base_url": base_url, "chat.openai_model": model,
               "chat.max_new_tokens": 12, "chat.temperature": 0.0, "chat.timeout_s": 120.0}
    return AvatarConfig().replace(**changes, **{f"chat.{k}": v for k, v in chat.items()})


def test_streaming_from_a_real_server(server):
    backend = OpenAIChatBackend.load(server["base_url"], server["model"], timeout_s=120)
    assert server["model"] in backend.list_models()
    deltas = list(backend.stream(_request()))
    text = "".join(deltas)
    assert len(deltas) >= 3, deltas  # token by token, not one block
    assert sum(c.isalpha() and c.isascii() for c in text) >= 5, text  # SmolLM2 answers in English


def test_chat_model_over_the_server_keeps_history(server):
    chat = ChatModel.load(_config(server["base_url"], server["model"]))
    assert (chat.backend, chat.fallback_reason, chat.device) == ("openai", None, "remote")
    conv = chat.new_conversation()
    first = chat.reply(conv, "My name is Alice.")
    second = chat.build_request(conv, "What is my name?")
    messages = chat._backend.payload(second)["messages"]
    assert first and conv.rounds == [("My name is Alice.", first)]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "My name is Alice." and messages[2]["content"] == first


def test_server_side_error_is_reported_and_history_unchanged(server):
    backend = OpenAIChatBackend(server["base_url"], "no-such-model", timeout_s=60)
    with pytest.raises(BackendError, match=r"HTTP 400: .*pinned"):
        list(backend.stream(_request()))
    chat = ChatModel.load(_config(server["base_url"], "no-such-model"))  # GET /models works: no fallback
    conv = chat.new_conversation()
    with pytest.raises(BackendError, match="HTTP 400"):
        chat.reply(conv, "Hello there!")
    assert conv.rounds == []


def test_read_timeout():
    """A server that accepts the connection and never answers (a hung server) -> BackendError within timeout_s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    backend = OpenAIChatBackend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "m", timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"did not answer within 0.5 s"):
        list(backend.stream(_request()))
    assert time.monotonic() - start < 5
    listener.close()


def test_server_down_is_unavailable_and_chat_falls_back():
    base_url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        list(OpenAIChatBackend(base_url, "m", timeout_s=5).stream(_request()))
    chat = ChatModel.load(_config(base_url, "m"))
    assert chat.backend == "smollm2" and "cannot be reached" in chat.fallback_reason


def test_api_key_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("AVATAR_TEST_KEY", "sk-test-123")
    backend = OpenAIChatBackend.load("http://127.0.0.1:9/v1", "m", api_key_env="AVATAR_TEST_KEY", check=False)
    assert backend._headers["Authorization"] == "Bearer sk-test-123"
    assert "Authorization" not in OpenAIChatBackend.load("http://x/v1", "m", "AVATAR_UNSET_KEY", check=False)._headers


def test_sse_parsing_errors():
    good = ['data: {"choices":[{"delta":{"content":"Hi"}}]}', "", ": keep-alive",
            'data: {"choices":[{"delta":{"content":" there"},"finish_reason":"stop"}]}']
    assert list(_sse_deltas(iter(good), "u")) == ["Hi", " there"]
    with pytest.raises(BackendError, match="malformed"):
        list(_sse_deltas(iter(["data: {not json"]), "u"))
    with pytest.raises(BackendError, match="closed the stream"):
        list(_sse_deltas(iter(good[:1]), "u"))
    with pytest.raises(BackendError, match="overloaded"):
        list(_sse_deltas(iter(['data: {"error": {"message": "server overloaded"}}']), "u"))
