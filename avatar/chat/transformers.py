"""Chat backend "transformers": a chat model that transformers supports natively, from a local folder.

Works with any causal LM whose `model_type` transformers knows without remote code (GLM-4-9B-chat-hf 'glm',
GLM-4-0414 'glm4', Qwen2.5 'qwen2', Qwen3 'qwen3', Llama, Gemma, Phi, ...) and whose tokenizer has a chat template.
The same class runs the embedded SmolLM2 GGUF (`gguf_file=`). Nothing is downloaded: local_files_only=True.

Generation is a plain decode loop (prefill, then one token per step with the KV cache), so the caller gets each
text delta as soon as its token is sampled, and closing the generator stops the work at once (a streamer thread
would keep generating to max_new_tokens).

Languages: {"zh", "en"} by default, because the natively supported chat families named above are bilingual; pass
`languages=` for an English-only model (SmolLM2 is {"en"}).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from avatar.core.devices import resolve_device, resolve_dtype
from avatar.core.errors import BackendError, BackendUnavailable
from avatar.core.timing import common_prefix

if TYPE_CHECKING:
    from avatar.core.types import GenerationParams

    from .base import ChatRequest

BILINGUAL = frozenset({"zh", "en"})
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf")


def read_model_config(folder: Path) -> dict:
    """config.json of a model folder as a dict ({} when absent or unreadable)."""
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_native_chat_folder(folder: Path) -> bool:
    """True when the folder holds weights of a causal LM that transformers implements itself (no remote code)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = read_model_config(folder).get("model_type", "")
    has_weights = any(any(Path(folder).glob(p)) for p in _WEIGHT_PATTERNS)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and has_weights


class HFChatBackend:
    """One loaded transformers chat model + tokenizer. Replies share only the KV cache of identical token prefixes
    (see _PrefixCache), so conversations never see each other's text."""

    follows_tags = True  # instruction-tuned models of this size follow "start with [emotion]"

    def __init__(self, model, tokenizer, name: str, languages: frozenset[str]) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.name, self.languages = name, frozenset(languages)
        self.device = str(next(model.parameters()).device)
        self.eos_ids = _eos_ids(model, tokenizer)
        self._prefixes = _PrefixSlot()
        self.last_reused_tokens = 0  # prompt tokens whose KV came from the previous reply (for tests and bench)
        if not getattr(tokenizer, "chat_template", None):
            raise BackendUnavailable(f"the chat model {name!r} has no chat template in its tokenizer files")

    @classmethod
    def load(cls, model_dir: Path | str, device: str = "auto", dtype: str = "auto", quantize: str = "",
             gguf_file: str | None = None, name: str = "transformers",
             languages: frozenset[str] = BILINGUAL) -> "HFChatBackend":
        """Loads from a local folder only; raises BackendUnavailable when the folder or a package is missing."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(model_dir)
        if not folder.is_dir():
            raise BackendUnavailable(f"chat model folder not found: {folder}")
        device = resolve_device(device)
        kwargs = {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=resolve_dtype(dtype, device), **_quantization(quantize, device), **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise BackendUnavailable(f"cannot load the chat model in {folder}: {e}") from e
        if not quantize:
            model = model.to(device)  # quantized models are placed by from_pretrained (device_map)
        model.eval()
        return cls(model, tokenizer, name, languages)

    # -- the backend interface shared with avatar.chat (see ChatBackend there) --

    def count_tokens(self, request: "ChatRequest") -> int:
        return len(self.prompt_ids(request))

    def count_text_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, request: "ChatRequest") -> list[int]:
        messages = request.messages()
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
        except Exception as e:  # jinja TemplateError: some templates (Gemma) reject a system role
            if messages[0]["role"] != "system":
                raise BackendError(f"the chat template failed: {e}") from e
            ids = self.tokenizer.apply_chat_template(_merge_system(messages), add_generation_prompt=True,
                                                     tokenize=True, return_dict=False)
        return list(ids)

    def stream(self, request: "ChatRequest") -> Iterator[str]:
        """Text deltas of the reply; their concatenation is the decoded reply (special tokens removed)."""
        token_ids = self.generate_ids(self.prompt_ids(request), request.params)
        yield from _text_deltas(self.tokenizer, token_ids)

    # -- generation --

    def generate_ids(self, prompt_ids: list[int], params: "GenerationParams") -> Iterator[int]:
        """New token ids one by one (eos excluded); the first comes right after the prompt's prefill.
        The KV cache of the previous reply is reused for the tokens this prompt shares with it. A reply checks the
        cache out while it runs (one running at the same moment starts empty) and back in when it ends or is
        closed; after an error it is dropped, as a forward may have left it half-updated."""
        prefix = self._prefixes.checkout()
        try:
            yield from self._decode(prompt_ids, params, prefix)
        except GeneratorExit:  # closed at a yield: the cache holds exactly the tokens fed so far
            self._prefixes.checkin(prefix)
            raise
        self._prefixes.checkin(prefix)

    def _decode(self, prompt_ids: list[int], params: "GenerationParams", prefix: "_PrefixCache") -> Iterator[int]:
        sampler = _Sampler(params)
        cache, start = prefix.take(prompt_ids)
        self.last_reused_tokens = start
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        fed = list(prompt_ids)  # the tokens in the cache, kept on the host (no device->host copy per token)
        step_input = ids[:, start:]
        for _ in range(params.max_new_tokens):
            with torch.inference_mode():
                # logits_to_keep=1: the prefill's logits for every prompt position would be (tokens x vocab) floats
                out = self.model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                prefix.store(list(fed), cache)
                token_id = sampler(ids, out.logits[:, -1, :])
            if token_id in self.eos_ids:
                return
            yield token_id
            step_input = torch.tensor([[token_id]], dtype=torch.long, device=self.device)
            ids = torch.cat([ids, step_input], dim=1)  # the sampler's repetition penalty reads the whole sequence
            fed.append(token_id)


class _PrefixCache:
    """The KV cache of the tokens last fed to the model (persona, earlier rounds, the last reply). A new prompt that
    starts with the same tokens only prefills the rest: the first token of a later turn comes as fast as the first."""

    MIN_REUSE_TOKENS = 8

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.cache = None

    def take(self, prompt_ids: list[int]) -> tuple[object | None, int]:
        """(cache holding the first n prompt tokens, n); (None, 0) when too little is shared to be worth it."""
        n = min(common_prefix(self.ids, prompt_ids), len(prompt_ids) - 1)  # >= 1 token left to get logits from
        if self.cache is None or n < self.MIN_REUSE_TOKENS or not _croppable(self.cache, len(self.ids)):
            self.ids, self.cache = [], None
            return None, 0
        if len(self.ids) > n:
            self.cache.crop(n - len(self.ids))  # a negative count: tokens to remove from the end
        self.ids = self.ids[:n]
        return self.cache, n

    def store(self, fed_ids: list[int], cache) -> None:
        self.ids, self.cache = fed_ids, cache


class _PrefixSlot:
    """Holds the one _PrefixCache kept between replies; a reply takes it out, so no lock is held while it runs."""

    def __init__(self) -> None:
        self._kept: _PrefixCache | None = None
        self._lock = threading.Lock()

    def checkout(self) -> _PrefixCache:
        with self._lock:
            kept, self._kept = self._kept, None
        return kept or _PrefixCache()

    def checkin(self, prefix: _PrefixCache) -> None:
        with self._lock:
            self._kept = prefix


def _croppable(cache, length: int) -> bool:
    """Only plain full-attention caches are cut back; sliding-window or linear-attention layers are not."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers) and cache.get_seq_length() == length




class _Sampler:
    """Repetition penalty, then greedy (temperature <= 0) or temperature + top-p sampling from a seeded generator,
    so the same request gives the same reply."""

    def __init__(self, params: "GenerationParams") -> None:
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        self.greedy = params.temperature <= 0
        steps = [RepetitionPenaltyLogitsProcessor(params.repetition_penalty)] if params.repetition_penalty != 1 else []
        if not self.greedy:
            steps += [TemperatureLogitsWarper(params.temperature), TopPLogitsWarper(params.top_p)]
        self.processors = LogitsProcessorList(steps)
        self.generator = torch.Generator(device="cpu").manual_seed(params.seed)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> int:
        scores = self.processors(ids, logits.float())
        if self.greedy:
            return int(scores.argmax(dim=-1).item())
        probs = torch.softmax(scores, dim=-1).cpu()
        return int(torch.multinomial(probs[0], 1, generator=self.generator).item())


def _text_deltas(tokenizer, token_ids: Iterator[int]) -> Iterator[str]:
    """Decodes the growing id list and yields only the new text. A trailing U+FFFD means a character split across
    tokens (common in Chinese): wait for the next token before emitting it."""
    generated: list[int] = []
    emitted = ""
    for token_id in token_ids:
        generated.append(token_id)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(emitted):
            continue
        if len(text) > len(emitted):
            yield text[len(emitted):]
            emitted = text
    final = tokenizer.decode(generated, skip_special_tokens=True).rstrip("\ufffd")
    if final.startswith(emitted) and len(final) > len(emitted):
        yield final[len(emitted):]


def _eos_ids(model, tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    if not ids:
        raise BackendUnavailable("the chat model defines no end-of-sequence token")
    return frozenset(ids)


def _merge_system(messages: list[dict]) -> list[dict]:
    """For templates without a system role: the system text goes in front of the first user message."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def _quantization(quantize: str, device: str) -> dict:
    if not quantize:
        return {}
    if quantize not in ("8bit", "4bit"):
        raise BackendUnavailable(f"chat quantize {quantize!r} is not available for transformers models (int8 is "
                                 "ChatGLM2's own mode); use '', '8bit' or '4bit'")
    if not device.startswith("cuda"):
        raise BackendUnavailable("8bit/4bit quantization (bitsandbytes) needs a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401  (transformers needs it for BitsAndBytesConfig)
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise BackendUnavailable(f"quantize={quantize!r} needs the bitsandbytes package: {e}") from e
    bnb = BitsAndBytesConfig(load_in_8bit=quantize == "8bit", load_in_4bit=quantize == "4bit")
    return {"quantization_config": bnb, "device_map": device}
