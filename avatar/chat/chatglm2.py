"""ChatGLM2-6B in-process: official-folder loader, SentencePiece tokenizer, prompt format, streaming generation.

The chat stage (avatar/chat/__init__.py) wraps `ChatGLM2Backend`:

    backend = ChatGLM2Backend.load(Path("checkpoints/chatglm2-6b"), device="auto", dtype="auto")
    for delta in backend.stream(history=[("你好", "你好！")], query="讲个笑话", system="你是小助手。"):
        print(delta, end="")

A model folder is the official THUDM/chatglm2-6b one: config.json, tokenizer.model and the weights as
pytorch_model-0000X-of-0000Y.bin shards + pytorch_model.bin.index.json, or model.safetensors (optionally sharded
with model.safetensors.index.json), or a single pytorch_model.bin. The remote Python files are not used.

ChatGLM2 has no system role: the system/persona text is put in front of the first round's question of the prompt
(after old rounds were dropped for the context budget, so the persona is always kept).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from avatar.core import devices
from avatar.core.config import CHOICES, AvatarConfig
from avatar.core.errors import AvatarError, BackendError, BackendUnavailable, EmptyText, TextTooLong, WeightsError
from avatar.core.timing import common_prefix
from avatar.core.types import GenerationParams
from models.chatglm2 import ChatGLM2Config, ChatGLM2ForCausalLM, CudaGraphDecoder, CudaGraphPrefill, KVCache
from models.gemv import swap_linears

from .base import ChatRequest

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")  # ids follow the SentencePiece vocabulary
TRAINING_TIME_MARK, TRAINING_TIME_TEXT = "[[训练时间]]", "2023年"  # official process_response replacement
CACHE_ROUND_TOKENS = 256  # the static cache grows in these steps (each growth re-captures the CUDA graph)
LOCK_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------------------------------------- loading

def resolve_device(device: str) -> torch.device:
    dev = torch.device(devices.resolve_device(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    return devices.resolve_dtype(dtype, device, gpu_default="float16")  # ChatGLM2 was trained and shipped in fp16


def read_config(model_dir: Path) -> ChatGLM2Config:
    path = model_dir / "config.json"
    if not path.is_file():
        raise WeightsError(f"ChatGLM2 folder {model_dir} has no config.json")
    try:
        return ChatGLM2Config.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise WeightsError(f"{path}: not a usable ChatGLM2 config: {e}") from None


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The weight files of an official folder, in the first layout found (sharded safetensors, safetensors,
    sharded .bin, .bin)."""
    for index_name, single_name in (("model.safetensors.index.json", "model.safetensors"),
                                    ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (model_dir / index_name).is_file():
            return _files_from_index(model_dir / index_name)
        if (model_dir / single_name).is_file():
            return [model_dir / single_name]
    raise WeightsError(f"no ChatGLM2 weights in {model_dir}: expected model.safetensors, pytorch_model.bin "
                       "or their sharded forms with an index.json")


def _files_from_index(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{index_path}: unreadable shard index ({e})") from None
    files = [index_path.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise WeightsError(f"{index_path} lists shard file(s) that are missing: {', '.join(missing)}")
    return files


def read_tensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    """(key, CPU tensor) pairs of one weight file; safetensors or torch.load(weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            yield from _read_safetensors(path)
        else:
            yield from _torch_load(path).items()
    except WeightsError:
        raise
    except Exception as e:  # corrupt/truncated files raise many different types
        raise WeightsError(f"cannot read weight file {path}: {e}") from None


def _read_safetensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            yield key, f.get_tensor(key)


def _torch_load(path: Path) -> dict[str, Tensor]:
    try:  # mmap: a 2 GB shard is not copied into memory before it is converted and moved
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    return data


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: Path) -> None:
    """Strict match of names and shapes; the error lists what differs."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_first(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected)}")
    if wrong:
        parts.append("shape mismatch: " + _first([f"{k} {tuple(found[k])} != {tuple(expected[k])}" for k in wrong]))
    raise WeightsError(f"ChatGLM2 weights in {where} do not match config.json; " + "; ".join(parts))


def _first(items: list[str], n: int = 12) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def load_model(model_dir: Path, device: str = "auto", dtype: str = "auto", quantize: str = "") -> ChatGLM2ForCausalLM:
    """Build the network on the meta device and fill it with the checkpoint's tensors, each converted and moved as
    it is read: a float32 CPU copy of the 6B model (25 GB) is never made. Strict: names and shapes must match."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    quantize = _check_quantize(quantize, dev)
    if quantize and dt == torch.float32:
        dt = torch.float16  # bitsandbytes and the int8 kernels compute in half precision
    with torch.device("meta"):
        model = ChatGLM2ForCausalLM(cfg)
    bnb = quantize in ("8bit", "4bit")
    target = torch.device("cpu") if bnb else dev  # bitsandbytes quantizes when the module moves to CUDA
    state = {}
    for path in checkpoint_files(model_dir):
        for key, tensor in read_tensors(path):
            state[key] = tensor.to(device=target, dtype=dt if tensor.is_floating_point() else tensor.dtype)
    check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()},
               {k: tuple(v.shape) for k, v in state.items()}, model_dir)
    model.load_state_dict(state, strict=True, assign=True)
    state.clear()  # the model holds the tensors now: int8 below frees each fp matrix as it is replaced
    if bnb:
        _quantize_linears(model, quantize)
        model.to(dev)
    elif quantize == "int8":  # weight-only, one scale per output row; one-row products run a Triton kernel
        swap_linears(model, int8=True)
    model.transformer.rotary_pos_emb.reset_table()
    return model.eval().requires_grad_(False)


def _check_quantize(quantize: str, device: torch.device) -> str:
    mode = (quantize or "").strip().lower()
    if mode not in CHOICES["chat.quantize"]:
        raise AvatarError(f"unknown quantize mode {quantize!r}; use '', 'int8', '8bit' or '4bit'")
    if mode and device.type != "cuda":
        raise BackendUnavailable(f"{mode} quantization needs a CUDA GPU; use quantize='' on CPU")
    return mode


def _import_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise BackendUnavailable("8bit/4bit quantization needs the bitsandbytes package: pip install bitsandbytes"
                                 ) from None
    return bitsandbytes


def _quantize_linears(model: ChatGLM2ForCausalLM, mode: str) -> None:
    """Swap the transformer layers' Linear modules for bitsandbytes ones (embedding and output layer stay half)."""
    bnb = _import_bitsandbytes()
    for layer in model.transformer.encoder.layers:
        for parent, name in ((layer.self_attention, "query_key_value"), (layer.self_attention, "dense"),
                             (layer.mlp, "dense_h_to_4h"), (layer.mlp, "dense_4h_to_h")):
            setattr(parent, name, _bnb_linear(bnb, getattr(parent, name), mode))


def _bnb_linear(bnb, linear: nn.Linear, mode: str) -> nn.Module:
    has_bias = linear.bias is not None
    with torch.device("meta"):  # the modules' own random init would be thrown away
        if mode == "8bit":
            q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, threshold=6.0)
        else:
            q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                  compute_dtype=linear.weight.dtype, quant_type="nf4")
    if mode == "8bit":
        q.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
    else:
        q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
    if has_bias:
        q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return q


# --------------------------------------------------------------------------------------------------------- tokenizer

class ChatGLM2Tokenizer:
    """The official ChatGLMTokenizer's ids from tokenizer.model: SentencePiece ids, then [MASK] [gMASK] [sMASK]
    sop eop appended (64789..64793); a prompt starts with [gMASK] sop. Text that looks like a control token
    ("</s>") stays plain text here (the HF slow tokenizer would map it to the control id)."""

    def __init__(self, processor) -> None:
        self.sp = processor
        self.piece_count = processor.vocab_size()
        self.special_ids = {name: self.piece_count + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.vocab_size = self.piece_count + len(SPECIAL_TOKENS)
        self.bos_id, self.eos_id, self.pad_id = processor.bos_id(), processor.eos_id(), processor.unk_id()

    @classmethod
    def load(cls, path: Path) -> "ChatGLM2Tokenizer":
        try:
            import sentencepiece
        except ImportError:
            raise BackendUnavailable("the ChatGLM2 tokenizer needs the sentencepiece package") from None
        if not Path(path).is_file():
            raise WeightsError(f"ChatGLM2 tokenizer file not found: {path}")
        try:
            return cls(sentencepiece.SentencePieceProcessor(model_file=str(path)))
        except (RuntimeError, OSError) as e:
            raise WeightsError(f"{path} is not a SentencePiece model: {e}") from None

    @property
    def prefix_ids(self) -> list[int]:
        return [self.special_ids["[gMASK]"], self.special_ids["sop"]]

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.prefix_ids + self.encode(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        """Control ids (bos, eos, pad/unk, [gMASK]...) decode to nothing, as in the official tokenizer."""
        keep = [i for i in ids if i < self.piece_count and i not in (self.bos_id, self.eos_id, self.pad_id)]
        return self.sp.decode(keep)


def build_prompt(query: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The official format: "[Round i]\\n\\n问：q\\n\\n答：a\\n\\n" per past round, then the open round."""
    rounds = [f"[Round {i}]\n\n问：{q}\n\n答：{a}\n\n" for i, (q, a) in enumerate(history, start=1)]
    return "".join(rounds) + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："


def with_system(history: Sequence[tuple[str, str]], query: str, system: str) -> tuple[list[tuple[str, str]], str]:
    """ChatGLM2 has no system role: the system text goes before the first question of the prompt."""
    rounds = list(history)
    if not system:
        return rounds, query
    if rounds:
        rounds[0] = (f"{system}\n\n{rounds[0][0]}", rounds[0][1])
        return rounds, query
    return rounds, f"{system}\n\n{query}"


def fit_prompt(tokenizer: ChatGLM2Tokenizer, history: Sequence[tuple[str, str]], query: str, system: str,
               context_tokens: int) -> list[int]:
    """Prompt ids within `context_tokens`, dropping the oldest rounds first (the system text is always kept)."""
    for first in range(len(history) + 1):
        rounds, question = with_system(history[first:], query, system)
        ids = tokenizer.encode_prompt(build_prompt(question, rounds))
        if len(ids) <= context_tokens:
            if first:
                log.info("ChatGLM2 prompt: dropped the %d oldest round(s) to fit %d tokens", first, context_tokens)
            return ids
    raise TextTooLong(f"the message and persona need {len(ids)} tokens, more than the chat context of "
                      f"{context_tokens}; please shorten it")


class TextStream:
    """Token ids in, text deltas out. Decodes the whole reply each time (replies are short) and emits only the
    stable part: trailing U+FFFD (an incomplete UTF-8 sequence of byte pieces), trailing whitespace (the reply is
    stripped, as the official process_response does) and a partial "[[训练时间]]" mark are held back."""

    def __init__(self, tokenizer: ChatGLM2Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids).lstrip().rstrip("\ufffd").rstrip()
        text = text.replace(TRAINING_TIME_MARK, TRAINING_TIME_TEXT)
        return self._advance(_drop_partial_mark(text))

    def finish(self) -> str:
        return self._advance(self.text())

    def text(self) -> str:
        """The full reply as the official chat() returns it."""
        return self.tokenizer.decode(self.ids).strip().replace(TRAINING_TIME_MARK, TRAINING_TIME_TEXT)

    def _advance(self, stable: str) -> str:
        if not stable.startswith(self.emitted):
            return ""  # cannot happen for valid UTF-8; never take back text already sent
        delta, self.emitted = stable[len(self.emitted):], stable
        return delta


def _drop_partial_mark(text: str) -> str:
    for n in range(len(TRAINING_TIME_MARK) - 1, 0, -1):
        if text.endswith(TRAINING_TIME_MARK[:n]):
            return text[:-n]
    return text


# -------------------------------------------------------------------------------------------------------- generation

class Sampler:
    """Next-token choice on the model's device. Order as in HF generate: repetition penalty, temperature, top-p.
    Ids beyond the tokenizer (padding rows of the 65024 vocabulary) are never chosen."""

    def __init__(self, opts: GenerationParams, vocab_size: int, logits_size: int, prompt_ids: Sequence[int],
                 device: torch.device) -> None:
        self.opts, self.vocab_size = opts, vocab_size
        with torch.inference_mode():
            self.seen = torch.zeros(logits_size, dtype=torch.bool, device=device)
            self.seen[torch.tensor(list(prompt_ids), dtype=torch.long, device=device)] = True
            # official InvalidScoreLogitsProcessor: non-finite scores -> token 5
            self.fallback = torch.zeros(logits_size, device=device)
            self.fallback[5] = 5e4
        self.generator = torch.Generator(device=device).manual_seed(int(opts.seed))

    @torch.inference_mode()
    def __call__(self, logits: Tensor) -> Tensor:
        """logits (1, V) -> token (1,) int64 on the device (no host sync)."""
        x = logits.float()
        x = torch.where(torch.isfinite(x.sum()), x, self.fallback)  # a sum is finite iff every score is
        penalty = self.opts.repetition_penalty
        if penalty != 1.0:
            x = torch.where(self.seen, torch.where(x < 0, x * penalty, x / penalty), x)
        x[..., self.vocab_size:] = float("-inf")
        token = x.argmax(-1) if self.opts.temperature <= 0 else self._sample(x / self.opts.temperature)
        self.seen[token] = True
        return token

    def _sample(self, x: Tensor) -> Tensor:
        probs = torch.softmax(x, dim=-1)
        if self.opts.top_p >= 1.0:
            return torch.multinomial(probs, 1, generator=self.generator).view(-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_probs.cumsum(-1) - sorted_probs) > self.opts.top_p  # the top token always stays
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=self.generator)
        return order.gather(-1, choice).view(-1)


class TokenReader:
    """A sampled token to the host without waiting for the work queued after it (the next decode step): an
    asynchronous copy into pinned memory and an event, instead of .item(), which waits for the whole stream."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.empty(1, dtype=torch.long, pin_memory=self.cuda)
        self.copied = torch.cuda.Event() if self.cuda else None

    def send(self, token: Tensor) -> None:
        self.host.copy_(token.view(-1)[:1], non_blocking=self.cuda)
        if self.copied is not None:
            self.copied.record()

    def receive(self) -> int:
        if self.copied is not None:
            self.copied.synchronize()
        return int(self.host[0])


class ChatGLM2Backend:
    """One loaded ChatGLM2 with a static KV cache. On CUDA the one-token decode step runs from a CUDA graph.
    The KV cache of the last prompt + reply is reused: the next turn prefills only the tokens after the common
    prefix. One generation at a time (a lock)."""

    def __init__(self, model: ChatGLM2ForCausalLM, tokenizer: ChatGLM2Tokenizer, cuda_graph: bool = True,
                 decode: str = "graph") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.device = model.transformer.embedding.word_embeddings.weight.device
        self.use_cuda_graph = cuda_graph and self.device.type == "cuda"
        self.decode = decode if self.use_cuda_graph else "graph"  # fused: CUDA graphs of Triton kernels only
        self._cache: KVCache | None = None
        self._decoder: CudaGraphDecoder | None = None
        self._prefill_graphs: CudaGraphPrefill | None = None
        self._cached_ids: list[int] = []  # tokens whose K/V sit in the cache at positions 0..n-1
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto", dtype: str = "auto", quantize: str = "",
             cuda_graph: bool = True, decode: str = "graph") -> "ChatGLM2Backend":
        """An official chatglm2-6b folder; quantize '' | 'int8' (weight-only, Triton kernels) | '8bit' | '4bit'
        (bitsandbytes: no CUDA graph), CUDA only; decode 'graph' | 'fused' (see ChatConfig.decode)."""
        model_dir = Path(model_dir)
        tokenizer = ChatGLM2Tokenizer.load(model_dir / "tokenizer.model")
        model = load_model(model_dir, device, dtype, quantize)
        return cls(model, tokenizer, cuda_graph=cuda_graph and quantize in ("", "int8"), decode=decode)

    def prompt_ids(self, history: Sequence[tuple[str, str]], query: str, system: str = "",
                   context_tokens: int = 1536) -> list[int]:
        return fit_prompt(self.tokenizer, history, query, system, context_tokens)

    def stream(self, history: Sequence[tuple[str, str]], query: str, system: str = "", max_new_tokens: int = 160,
               temperature: float = 0.7, top_p: float = 0.9, repetition_penalty: float = 1.1,
               context_tokens: int = 1536, seed: int = 0) -> Iterator[str]:
        """Text deltas of the reply to `query` after `history` [(question, answer), ...]; their concatenation is the
        stripped reply. Stops at eos or after max_new_tokens."""
        if not query or not query.strip():
            raise EmptyText("the message is empty")
        ids = self.prompt_ids(history, query, system, context_tokens)
        opts = GenerationParams(max_new_tokens, temperature, top_p, repetition_penalty, seed)
        text = TextStream(self.tokenizer)
        for token_id in self.generate_ids(ids, opts):
            delta = text.push(token_id)
            if delta:
                yield delta
        tail = text.finish()
        if tail:
            yield tail

    def generate_ids(self, prompt_ids: Sequence[int], opts: GenerationParams) -> Iterator[int]:
        """New token ids (eos excluded) one by one; the first comes right after the prompt's prefill."""
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise BackendError("ChatGLM2 is still busy with another reply")
        try:
            yield from self._generate(list(prompt_ids), opts)
        finally:
            self._lock.release()

    def _generate(self, prompt_ids: list[int], opts: GenerationParams) -> Iterator[int]:
        max_new = min(opts.max_new_tokens, self.model.config.seq_length - len(prompt_ids))
        if max_new <= 0:
            return
        sampler = Sampler(opts, self.tokenizer.vocab_size, self.model.config.padded_vocab_size, prompt_ids,
                          self.device)
        logits = self._prefill(prompt_ids, len(prompt_ids) + max_new)
        eos = {self.tokenizer.eos_id, self.model.config.eos_token_id}
        reader = TokenReader(self.device)
        for step in range(max_new):
            token = sampler(logits)
            reader.send(token)
            # the next step is queued (it reads the token on the device) before the host waits for this token: the
            # GPU decodes on while the token travels to the host and the caller handles it
            stepped = step + 1 < max_new
            logits = self._step(token) if stepped else logits
            token_id = reader.receive()
            if token_id in eos:
                return  # the step queued with eos wrote K/V past _cached_ids: the next prefill overwrites it
            if stepped:
                self._cached_ids.append(token_id)  # its K/V is (being) written
            yield token_id

    @torch.inference_mode()
    def _prefill(self, prompt_ids: list[int], total_tokens: int) -> Tensor:
        self._ensure_cache(total_tokens)
        start = min(common_prefix(self._cached_ids, prompt_ids), len(prompt_ids) - 1)
        self._cached_ids = prompt_ids[:start]
        ids = torch.tensor([prompt_ids[start:]], dtype=torch.long, device=self.device)
        logits = self._prefill_graphs(ids, start, self._cache) if self._prefill_graphs is not None else None
        if logits is None:  # no graphs (CPU), or no captured length fits
            positions = torch.arange(start, len(prompt_ids), device=self.device)
            logits = self.model(ids, positions, self._cache, last_only=True)
        self._cached_ids = list(prompt_ids)
        return logits[:, -1]

    @torch.inference_mode()
    def _step(self, token: Tensor) -> Tensor:
        """Queues the decode step of `token` (on the device) at the next cache position; the caller records its id."""
        positions = torch.tensor([len(self._cached_ids)], dtype=torch.long, device=self.device)
        step = self._decoder if self._decoder is not None else self.model
        return step(token.view(1, 1), positions, self._cache)[:, -1]

    def _ensure_cache(self, total_tokens: int) -> None:
        if self._cache is not None and self._cache.max_len >= total_tokens:
            return
        rounded = -(-total_tokens // CACHE_ROUND_TOKENS) * CACHE_ROUND_TOKENS
        max_len = min(rounded, self.model.config.seq_length)
        self._decoder, self._prefill_graphs, self._cache, self._cached_ids = None, None, None, []
        with torch.inference_mode():
            self._cache = self.model.allocate_cache(1, max_len)
        if self.use_cuda_graph:  # both capture writes into the cache: before any prefill
            self._decoder = self._capture()
            self._prefill_graphs = self._capture_prefill()

    def _capture(self) -> CudaGraphDecoder | None:
        if self.decode == "fused":
            try:
                from models.glm_decode import FusedDecodeStep

                return CudaGraphDecoder(FusedDecodeStep(self.model), self._cache)
            except Exception as e:  # no triton, a model variant it lacks, a kernel triton cannot compile here
                log.warning("ChatGLM2: the fused decode step is unavailable (%s: %s); using the model's",
                            type(e).__name__, e)
                self.decode = "graph"
        try:
            return CudaGraphDecoder(self.model, self._cache)
        except RuntimeError as e:  # e.g. an op that cannot be captured: eager decoding still works
            log.warning("ChatGLM2: CUDA graph capture failed (%s); decoding without it", e)
            self.use_cuda_graph = False
            return None

    def _capture_prefill(self) -> CudaGraphPrefill | None:
        try:
            return CudaGraphPrefill(self.model, self._cache)
        except RuntimeError as e:
            log.warning("ChatGLM2: CUDA graph capture of the prefill failed (%s); prefilling without it", e)
            return None


class ChatGLM2Chat:
    """Adapts avatar.chat.chatglm2.ChatGLM2Backend (history, query, system) to the ChatBackend interface."""

    name = "chatglm2"
    languages = frozenset({"zh", "en"})
    follows_tags = True

    def __init__(self, backend, context_tokens: int) -> None:
        self._glm = backend
        self.context_tokens = context_tokens
        self.device = str(backend.device)

    @classmethod
    def load(cls, cfg: AvatarConfig, folder: Path) -> "ChatGLM2Chat":

        c = cfg.chat
        return cls(ChatGLM2Backend.load(folder, cfg.device, c.dtype, c.quantize, decode=c.decode), c.context_tokens)

    def count_tokens(self, request: ChatRequest) -> int:
        no_limit = 1 << 30
        return len(self._glm.prompt_ids(list(request.history), request.query, request.system, no_limit))

    def count_text_tokens(self, text: str) -> int:
        return len(self._glm.tokenizer.encode(text))

    def stream(self, request: ChatRequest) -> Iterator[str]:
        p = request.params
        return self._glm.stream(list(request.history), request.query, request.system, p.max_new_tokens,
                                p.temperature, p.top_p, p.repetition_penalty, self.context_tokens, p.seed)
