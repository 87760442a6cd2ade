"""ChatGLM2-6B network (THUDM/chatglm2-6b), written from its published architecture.

Module and parameter names follow the Hugging Face checkpoint, so `state_dict()` keys equal the official ones
(`transformer.embedding.word_embeddings.weight`, `transformer.encoder.layers.{i}...`, `transformer.output_layer.weight`,
`transformer.rotary_pos_emb.inv_freq`).

Layout differences from the official code (results are the same):
- activations are batch-first (B, S, hidden); the official code is sequence-first (S, B, hidden);
- the KV cache is a preallocated static tensor per layer, (B, groups, max_len, head_dim), written at the token
  positions with `index_copy_`; attention reads the whole cache with a mask `key_position <= query_position`, so the
  one-token decode step has fixed shapes and no host synchronisation and can be captured in a CUDA graph
  (`CudaGraphDecoder` below) or by torch.compile(mode="reduce-overhead");
- the rotary table is always computed in float32 from base 10000 and then cast to the dtype of `inv_freq`. The
  official fp16 model computes it in fp16 (positions above 2048 are rounded there); fp32 matches it exactly.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROPE_BASE = 10000.0


@dataclass(frozen=True)
class ChatGLM2Config:
    """The fields of the official config.json that define the network (others are ignored)."""

    num_layers: int = 28
    hidden_size: int = 4096
    num_attention_heads: int = 32
    kv_channels: int = 128  # head dimension
    multi_query_attention: bool = True
    multi_query_group_num: int = 2  # K/V heads shared by num_attention_heads / groups query heads each
    ffn_hidden_size: int = 13696  # SwiGLU width: dense_h_to_4h has 2x this many outputs
    padded_vocab_size: int = 65024
    seq_length: int = 32768  # longest position the rotary table covers
    layernorm_epsilon: float = 1e-5
    rmsnorm: bool = True  # False = LayerNorm (not used by chatglm2-6b, kept for the config field)
    add_qkv_bias: bool = True
    add_bias_linear: bool = False
    apply_residual_connection_post_layernorm: bool = False
    post_layer_norm: bool = True
    eos_token_id: int = 2
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChatGLM2Config":
        """From the official config.json; raises ValueError for variants this network does not implement."""
        if data.get("pre_seq_len") is not None:
            raise ValueError("P-tuning prefix checkpoints (pre_seq_len) are not supported")
        if data.get("quantization_bit"):
            raise ValueError("pre-quantized checkpoints (quantization_bit) are not supported; use the fp16 weights")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and v is not None}
        if data.get("kv_channels") is None and "hidden_size" in data:
            kwargs["kv_channels"] = data["hidden_size"] // data["num_attention_heads"]
        return cls(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.kv_channels

    @property
    def num_kv_heads(self) -> int:
        return self.multi_query_group_num if self.multi_query_attention else self.num_attention_heads

    @property
    def rope_pairs(self) -> int:
        """Rotary frequencies per head: the first head_dim / 2 dims are rotated, in adjacent (even, odd) pairs."""
        return self.head_dim // 4


@dataclass
class KVCache:
    """Static per-layer key/value buffers, each (batch, kv_heads, max_len, head_dim), on the model's device."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # One fused kernel on CUDA (statistics in float32); on CPU float32 it equals the official formula bit for bit.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def _norm(cfg: ChatGLM2Config) -> nn.Module:
    if cfg.rmsnorm:
        return RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)


class RotaryEmbedding(nn.Module):
    """`inv_freq` is kept only because the checkpoint has it; like the official forward, the table ignores its
    values and is rebuilt from base 10000 (it follows the buffer's dtype and device).

    The table is stored full width so that rotating is `x * cos + swap_pairs(x) * sin` (3 kernels for q and k
    together): cos = (c0, c0, c1, c1, ..., 1, ..., 1), sin = (-s0, s0, -s1, s1, ..., 0, ..., 0); the trailing
    head_dim / 2 dims pass unchanged."""

    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.num_pairs, self.head_dim = cfg.rope_pairs, cfg.head_dim
        self.max_positions = cfg.seq_length
        self.register_buffer("inv_freq", self._frequencies(torch.device("cpu")))
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.reset_table()

    def _frequencies(self, device: torch.device) -> Tensor:
        exponent = torch.arange(0, 2 * self.num_pairs, 2, dtype=torch.float32, device=device) / (2 * self.num_pairs)
        return 1.0 / ROPE_BASE**exponent

    def reset_parameters(self) -> None:
        """Official inv_freq values (for synthetic weights) and the table."""
        with torch.no_grad():
            self.inv_freq.copy_(self._frequencies(self.inv_freq.device))
        self.reset_table()

    def reset_table(self) -> None:
        """(Re)build the (max_positions, head_dim) cos/sin tables; needed after loading onto a meta-built model."""
        device = self.inv_freq.device
        positions = torch.arange(self.max_positions, dtype=torch.float32, device=device)
        angles = torch.outer(positions, self._frequencies(device)).repeat_interleave(2, dim=-1)
        sign = torch.tensor([-1.0, 1.0], device=device).repeat(self.num_pairs)
        passed = self.head_dim - angles.shape[1]
        cos = torch.cat((torch.cos(angles), angles.new_ones(self.max_positions, passed)), dim=-1)
        sin = torch.cat((torch.sin(angles) * sign, angles.new_zeros(self.max_positions, passed)), dim=-1)
        self.cos, self.sin = cos.to(self.inv_freq.dtype), sin.to(self.inv_freq.dtype)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions (S,) int64 -> cos, sin rows, each (S, head_dim)."""
        return self.cos.index_select(0, positions), self.sin.index_select(0, positions)


def apply_rotary(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """x (B, S, heads, head_dim). Rotates the first head_dim / 2 dims as adjacent (even, odd) pairs:
    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin), the official layout."""
    cos, sin = rope[0][:, None], rope[1][:, None]
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Multi-query attention with SDPA. q (B, S, H, D); k, v (B, G, L, D); mask (S, L) bool, True = attend.
    Query head h uses K/V group h // (H / G) (the official expand order). Returns (B, S, H * D)."""
    batch, seq, heads, dim = q.shape
    groups = k.shape[1]
    if seq == 1:
        # One token: the H/G query heads of a group become the rows of one SDPA call per group, so K/V are read
        # once per group instead of being copied H/G times (this is the decode step).
        qg = q.reshape(batch, groups, heads // groups, dim)
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask.view(1, 1, 1, -1))
        return out.reshape(batch, 1, heads * dim)
    reps = heads // groups
    k = k[:, :, None].expand(-1, -1, reps, -1, -1).reshape(batch, heads, -1, dim)
    v = v[:, :, None].expand(-1, -1, reps, -1, -1).reshape(batch, heads, -1, dim)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask[None, None])
    return out.transpose(1, 2).reshape(batch, seq, heads * dim)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split_sizes = [q_size, kv_size, kv_size]
        self.query_key_value = nn.Linear(cfg.hidden_size, q_size + 2 * kv_size,
                                         bias=cfg.add_qkv_bias or cfg.add_bias_linear)
        self.dense = nn.Linear(q_size, cfg.hidden_size, bias=cfg.add_bias_linear)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor, positions: Tensor,
                cache: tuple[Tensor, Tensor] | None) -> Tensor:
        qkv = self.query_key_value(x)
        q_size, kv_size, _ = self.split_sizes
        qk = apply_rotary(qkv[..., : q_size + kv_size].unflatten(-1, (-1, self.head_dim)), rope)
        q, k = qk[:, :, : self.num_heads], qk[:, :, self.num_heads:].transpose(1, 2)
        v = qkv[..., q_size + kv_size:].unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        if cache is not None:
            cache[0].index_copy_(2, positions, k.to(cache[0].dtype))
            cache[1].index_copy_(2, positions, v.to(cache[1].dtype))
            k, v = cache
        return self.dense(grouped_attention(q, k, v, mask))


class MLP(nn.Module):
    """SwiGLU: dense_h_to_4h produces [gate | up] halves; silu(gate) * up."""

    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, 2 * cfg.ffn_hidden_size, bias=cfg.add_bias_linear)
        self.dense_4h_to_h = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=cfg.add_bias_linear)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.dense_h_to_4h(x).chunk(2, dim=-1)
        return self.dense_4h_to_h(F.silu(gate) * up)


class GLMBlock(nn.Module):
    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.residual_from_norm = cfg.apply_residual_connection_post_layernorm
        self.input_layernorm = _norm(cfg)
        self.self_attention = SelfAttention(cfg)
        self.post_attention_layernorm = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor, positions: Tensor,
                cache: tuple[Tensor, Tensor] | None) -> Tensor:
        normed = self.input_layernorm(x)
        x = (normed if self.residual_from_norm else x) + self.self_attention(normed, rope, mask, positions, cache)
        normed = self.post_attention_layernorm(x)
        return (normed if self.residual_from_norm else x) + self.mlp(normed)


class GLMTransformer(nn.Module):
    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.layers = nn.ModuleList(GLMBlock(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = _norm(cfg) if cfg.post_layer_norm else nn.Identity()


class Embedding(nn.Module):
    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.word_embeddings(input_ids)


class ChatGLM2Model(nn.Module):
    """Embedding + transformer stack; `forward` returns the final-normed hidden states and every layer's input."""

    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.embedding = Embedding(cfg)
        self.rotary_pos_emb = RotaryEmbedding(cfg)
        self.encoder = GLMTransformer(cfg)
        self.output_layer = nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)

    def forward(self, input_ids: Tensor, positions: Tensor, cache: KVCache | None = None,
                return_states: bool = False) -> tuple[Tensor, list[Tensor]]:
        """input_ids (B, S) int64; positions (S,) int64, shared by the batch (no padding).
        Returns (hidden (B, S, hidden) after the final norm, states): with return_states, [embeddings, after
        layer 0, ..., after the last layer] (before the final norm), else [] (each layer's output is freed early)."""
        x = self.embedding(input_ids)
        rope = self.rotary_pos_emb(positions)
        key_positions = positions if cache is None else torch.arange(cache.max_len, device=positions.device)
        mask = key_positions[None, :] <= positions[:, None]
        states = [x] if return_states else []
        for i, layer in enumerate(self.encoder.layers):
            layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
            x = layer(x, rope, mask, positions, layer_cache)
            if return_states:
                states.append(x)
        return self.encoder.final_layernorm(x), states


class ChatGLM2ForCausalLM(nn.Module):
    """The checkpoint's top-level module (official name ChatGLMForConditionalGeneration)."""

    def __init__(self, cfg: ChatGLM2Config):
        super().__init__()
        self.config = cfg
        self.transformer = ChatGLM2Model(cfg)

    def forward(self, input_ids: Tensor, positions: Tensor, cache: KVCache | None = None,
                last_only: bool = False) -> Tensor:
        """input_ids (B, S), positions (S,) -> logits (B, S or 1, padded_vocab) in the model dtype.
        With a cache, K/V of these tokens are written at `positions` and attention sees every cached position
        <= the query's (the caller keeps the cache consistent: positions 0..p-1 filled before position p)."""
        hidden, _ = self.transformer(input_ids, positions, cache)
        if last_only:
            hidden = hidden[:, -1:]
        return self.transformer.output_layer(hidden)

    def allocate_cache(self, batch_size: int, max_len: int) -> KVCache:
        """Zeroed static cache on the weights' device, in the embedding dtype (the activation dtype)."""
        cfg = self.config
        if max_len > cfg.seq_length:
            raise ValueError(f"cache length {max_len} exceeds the model's seq_length {cfg.seq_length}")
        ref = self.transformer.embedding.word_embeddings.weight
        shape = (batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)
        make = lambda: torch.zeros(shape, dtype=ref.dtype, device=ref.device)  # noqa: E731
        return KVCache([make() for _ in range(cfg.num_layers)], [make() for _ in range(cfg.num_layers)])

    def init_synthetic_(self, generator: torch.Generator | None = None) -> None:
        """Random weights with sane activations (benchmarks, no checkpoint): N(0, 1/fan_in) matrices, unit norms."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=generator)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.fill_(1.0)
        self.transformer.rotary_pos_emb.reset_parameters()


class CudaGraphDecoder:
    """The one-token decode step `step_fn(token_ids (B,1), positions (1,), cache) -> logits (B,1,V)` replayed from a
    captured CUDA graph: one launch per token instead of ~30 per layer. Same call signature as the module.

    The graph is bound to this cache's buffers. Capturing runs the step a few times at position 0, so build this
    BEFORE prefilling the cache. The returned logits tensor is reused by the next call (copy it to keep it).
    `step_fn` may be the model or a torch.compile'd model (default mode: fused kernels; the graph removes launches).
    """

    def __init__(self, step_fn: Callable[..., Tensor], cache: KVCache, batch_size: int = 1, warmup_steps: int = 3):
        device = cache.keys[0].device
        if device.type != "cuda":
            raise ValueError("CUDA graphs need the model and cache on a CUDA device")
        self.cache = cache
        self.step_fn = step_fn  # its own buffers (a fused step's) are written by every replay: keep them allocated
        with torch.inference_mode():
            self.token_ids = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
            self.positions = torch.zeros((1,), dtype=torch.long, device=device)
            self.graph, self.logits = self._capture(step_fn, warmup_steps)

    def _capture(self, step_fn: Callable[..., Tensor], warmup_steps: int) -> tuple["torch.cuda.CUDAGraph", Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):  # cuBLAS workspaces, kernel selection, compile: all before capture
                step_fn(self.token_ids, self.positions, self.cache)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (other app stages) during the capture is neither an error nor
        # recorded; the capture stream is a non-blocking one, so it does not wait on their work either.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            logits = step_fn(self.token_ids, self.positions, self.cache)
        return graph, logits

    def __call__(self, token_ids: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        if cache is not None and cache is not self.cache:
            raise ValueError("this CUDA graph was captured for another cache")
        with torch.inference_mode():
            self.token_ids.copy_(token_ids)
            self.positions.copy_(positions)
            self.graph.replay()
        return self.logits


class CudaGraphPrefill:
    """Prompt prefill replayed from CUDA graphs captured for a few padded lengths: one launch instead of ~20 per
    layer, which is most of a short prompt's first-token time (the weights are read once either way).

    `prefill(input_ids (1, S), start, cache)` writes K/V of positions start..start+S-1 and returns the logits of the
    last real token (1, 1, V), or None where no captured length fits (S longer than the largest, or the padded length
    past the cache's end): the caller runs the model then. The padding tokens (id 0) write K/V at the positions after
    the prompt; nothing reads them (attention sees positions <= the query's) and decoding overwrites them in order.
    The graphs are bound to this cache and share one memory pool (they never run at the same time); the returned
    logits are valid until the next call (a graph of another length may reuse their memory).
    """

    LENGTHS = (32, 64, 128, 256, 512)

    def __init__(self, model: ChatGLM2ForCausalLM, cache: KVCache, lengths: tuple[int, ...] = LENGTHS,
                 warmup_steps: int = 2):
        device = cache.keys[0].device
        if device.type != "cuda":
            raise ValueError("CUDA graphs need the model and cache on a CUDA device")
        self.model, self.cache = model, cache
        self.graphs: dict[int, tuple] = {}
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for n in sorted(n for n in lengths if n <= cache.max_len):
                self.graphs[n] = self._capture(n, pool, warmup_steps, device)

    def _capture(self, n: int, pool, warmup_steps: int, device: torch.device) -> tuple:
        ids = torch.zeros((1, n), dtype=torch.long, device=device)
        positions = torch.arange(n, device=device)
        last = torch.zeros(1, dtype=torch.long, device=device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                self._forward(ids, positions, last)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            logits = self._forward(ids, positions, last)
        return graph, ids, positions, last, logits

    def _forward(self, ids: Tensor, positions: Tensor, last: Tensor) -> Tensor:
        hidden, _ = self.model.transformer(ids, positions, self.cache)
        return self.model.transformer.output_layer(hidden.index_select(1, last))

    def __call__(self, input_ids: Tensor, start: int, cache: KVCache | None = None) -> Tensor | None:
        if cache is not None and cache is not self.cache:
            raise ValueError("these CUDA graphs were captured for another cache")
        size = input_ids.shape[1]
        fits = [n for n in self.graphs if n >= size and start + n <= self.cache.max_len]
        if input_ids.shape[0] != 1 or not fits:
            return None
        graph, ids, positions, last, logits = self.graphs[min(fits)]
        with torch.inference_mode():
            ids.zero_()
            ids[:, :size].copy_(input_ids)
            torch.arange(start, start + ids.shape[1], out=positions)
            last.fill_(size - 1)
            graph.replay()
        return logits
