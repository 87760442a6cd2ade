"""Chat backend "openai": any server with the OpenAI chat-completions API (vLLM, Ollama, llama.cpp server,
`transformers serve`, a hosted API) by base URL.

POST {base_url}/chat/completions with stream=true; the server-sent events are parsed here (httpx, no openai
package). The API key is read from the environment variable named in the config (never from the config file);
local servers usually need none.

Errors: the server cannot be reached -> BackendUnavailable; an HTTP error (with the server's own message), a
timeout, a malformed or truncated stream -> BackendError.
"""
from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Iterator

import httpx

from avatar.core.errors import BackendError, BackendUnavailable

if TYPE_CHECKING:
    from .base import ChatRequest

_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for the context budget: one token per CJK character, one per ~4 other characters."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


class OpenAIChatBackend:
    name = "openai"
    languages = frozenset({"zh", "en"})  # unknown model: assume it can answer both
    follows_tags = True
    device = "remote"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model, self.timeout_s = model, timeout_s
        self._headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))

    @classmethod
    def load(cls, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
             check: bool = True) -> "OpenAIChatBackend":
        """check=True asks GET /models once so that a server that is down is reported at start-up."""
        backend = cls(base_url, model, os.environ.get(api_key_env, "") if api_key_env else "", timeout_s)
        if check:
            backend.list_models()
        return backend

    def list_models(self) -> list[str]:
        try:
            response = httpx.get(f"{self.base_url}/models", headers=self._headers, timeout=self._timeout)
        except httpx.TransportError as e:
            raise _transport_error(e, self.base_url, self.timeout_s) from e
        _raise_for_status(response)
        try:
            return [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BackendError(f"the chat server at {self.base_url} sent a malformed model list") from e

    # -- the backend interface shared with avatar.chat --

    def count_tokens(self, request: "ChatRequest") -> int:
        # +4 per message for the role markers every chat template adds
        return sum(estimate_tokens(m["content"]) + 4 for m in request.messages())

    def count_text_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def stream(self, request: "ChatRequest") -> Iterator[str]:
        """Text deltas as the server sends them."""
        payload = self.payload(request)
        url = f"{self.base_url}/chat/completions"
        try:
            with httpx.stream("POST", url, json=payload, headers=self._headers, timeout=self._timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                yield from _sse_deltas(response.iter_lines(), url)
        except httpx.TransportError as e:
            raise _transport_error(e, self.base_url, self.timeout_s) from e

    def payload(self, request: "ChatRequest") -> dict:
        p = request.params
        body = {"model": self.model, "messages": request.messages(), "stream": True,
                "max_tokens": p.max_new_tokens, "temperature": max(p.temperature, 0.0), "seed": p.seed}
        if p.temperature > 0:
            body["top_p"] = p.top_p  # repetition_penalty has no standard field in this API
        return body


def _sse_deltas(lines: Iterator[str], url: str) -> Iterator[str]:
    """Content deltas from 'data: {...}' lines. The stream must end with [DONE] or a finish_reason."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, ': keep-alive' comments, 'event:' lines
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = _parse_chunk(data, url)
        if "error" in chunk:
            raise BackendError(f"the chat server reported an error mid-reply: {_error_text(chunk)}")
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content
            if choice.get("finish_reason"):
                return
    raise BackendError(f"the chat server at {url} closed the stream before the reply was finished")


def _parse_chunk(data: str, url: str) -> dict:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise BackendError(f"the chat server at {url} sent a malformed stream line: {data[:120]!r}") from None
    if not isinstance(chunk, dict):
        raise BackendError(f"the chat server at {url} sent a malformed stream line: {data[:120]!r}")
    return chunk


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = _error_text(response.json())
    except ValueError:
        message = response.text.strip()[:300] or response.reason_phrase
    raise BackendError(f"the chat server answered HTTP {response.status_code}: {message}")


def _error_text(body) -> str:
    """The message of {"error": {"message": ...}} (OpenAI, vLLM), {"error": "..."} or {"detail": ...} (FastAPI)."""
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)


def _transport_error(e: httpx.TransportError, base_url: str, timeout_s: float) -> Exception:
    if isinstance(e, httpx.ConnectError):
        return BackendUnavailable(f"the chat server at {base_url} cannot be reached ({e}); is it running?")
    if isinstance(e, httpx.TimeoutException):
        return BackendError(f"the chat server at {base_url} did not answer within {timeout_s:g} s")
    return BackendError(f"the connection to the chat server at {base_url} failed: {e}")
