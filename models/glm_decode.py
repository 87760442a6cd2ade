"""ChatGLM2's one-token decode step as five Triton kernels per layer (batch 1, CUDA with triton, or triton's CPU
interpreter): the kernels are in models/glm_decode_triton.py, this module holds the weights, buffers and launches.

    step = FusedDecodeStep(model)                   # fp16/bf16 linears, or Int8Linear ones (models/gemv.py)
    logits = step(token_ids (1, 1), positions (1,), cache)        # (1, 1, vocab), same as model(...) for one token
    decoder = CudaGraphDecoder(step, cache)         # one graph launch per token (models/chatglm2.py)

The returned logits buffer is reused by the next call. Kernel configurations are chosen per matrix shape by timing
on the card at first use (before any graph capture: CudaGraphDecoder warms up first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .chatglm2 import ChatGLM2ForCausalLM, KVCache

# (BLOCK_N, BLOCK_K, num_warps, num_stages) tried per matrix shape; the interpreter runs the small one
LINEAR_CONFIGS = [(bn, bk, nw, st) for bn, bk, nw in ((4, 512, 4), (8, 256, 4), (8, 512, 4), (16, 256, 8),
                                                       (2, 1024, 4), (4, 1024, 8), (8, 1024, 8), (2, 2048, 8),
                                                       (4, 2048, 8)) for st in (1, 3, 4)]
INTERPRETER_LINEAR = (4, 32, 1, 1)
ATTENTION_CONFIGS = [(bl, nw) for bl in (32, 64, 128) for nw in (2, 4, 8)]  # (BLOCK_L, num_warps)
INTERPRETER_ATTENTION = (8, 1)
TIMING_POSITION = 300  # attention configs are timed at this many cached positions (a prompt and a reply)
_chosen: dict[tuple, tuple] = {}


@dataclass
class Matrix:
    """A linear layer's weight (N, K) fp or int8, its per-row scale (int8) and bias, or None."""

    weight: Tensor
    scale: Tensor | None
    bias: Tensor | None

    @classmethod
    def of(cls, linear: nn.Module) -> "Matrix":
        """From nn.Linear, models.gemv.DecodeLinear or models.gemv.Int8Linear."""
        bias = _detached(linear.bias)
        if hasattr(linear, "qweight"):
            return cls(linear.qweight, linear.scale, bias)
        return cls(linear.weight.detach(), None, bias)


@dataclass
class Layer:
    input_norm: Tensor
    qkv: Matrix
    dense: Matrix
    post_norm: Tensor
    h_to_4h: Matrix
    h4_to_h: Matrix


def supports(model: ChatGLM2ForCausalLM) -> str:
    """'' when the fused step implements this model's configuration, else why not."""
    cfg = model.config
    if not cfg.rmsnorm or not cfg.post_layer_norm:
        return "the fused decode step implements RMSNorm models with a final norm only"
    if cfg.apply_residual_connection_post_layernorm:
        return "the fused decode step adds the residual before the norm only"
    if cfg.head_dim & (cfg.head_dim - 1):
        return "the fused decode step needs a power-of-two head dimension"
    return ""


class FusedDecodeStep:
    """step(token_ids (1, 1), positions (1,), cache) -> logits (1, 1, vocab): embedding lookup, five kernels per
    layer, the final norm fused into the output layer."""

    def __init__(self, model: ChatGLM2ForCausalLM) -> None:
        reason = supports(model)
        if reason:
            raise ValueError(reason)
        cfg, t = model.config, model.transformer
        self.cfg, self.eps = cfg, cfg.layernorm_epsilon
        self.embedding = t.embedding.word_embeddings.weight.detach()  # views: no copy of any weight
        self.cos, self.sin = t.rotary_pos_emb.cos, t.rotary_pos_emb.sin
        self.layers = [Layer(b.input_layernorm.weight.detach(), Matrix.of(b.self_attention.query_key_value),
                             Matrix.of(b.self_attention.dense), b.post_attention_layernorm.weight.detach(),
                             Matrix.of(b.mlp.dense_h_to_4h), Matrix.of(b.mlp.dense_4h_to_h))
                       for b in t.encoder.layers]
        self.final_norm, self.output = t.encoder.final_layernorm.weight.detach(), Matrix.of(t.output_layer)
        dtype, device = self.embedding.dtype, self.embedding.device
        new = lambda n: torch.zeros(n, dtype=dtype, device=device)  # noqa: E731
        heads, groups, dim = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
        self.x, self.attn = new(cfg.hidden_size), new(heads * dim)
        self.qkv, self.glu = new((heads + 2 * groups) * dim), new(cfg.ffn_hidden_size)
        self.logits = new(cfg.padded_vocab_size)
        self.sm_scale = 1.0 / math.sqrt(dim)

    def __call__(self, token_ids: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        if token_ids.numel() != 1 or cache is None:
            raise ValueError("the fused decode step takes one token of one stream and a KV cache")
        torch.index_select(self.embedding, 0, token_ids.view(1), out=self.x.view(1, -1))
        for layer, keys, values in zip(self.layers, cache.keys, cache.values):
            self._linear(self.x, layer.qkv, self.qkv, norm=layer.input_norm)
            self._attention(positions, keys[0], values[0])
            self._linear(self.attn, layer.dense, self.x, residual=self.x)
            self._linear(self.x, layer.h_to_4h, self.glu, norm=layer.post_norm, glu=True)
            self._linear(self.glu, layer.h4_to_h, self.x, residual=self.x)
        self._linear(self.x, self.output, self.logits, norm=self.final_norm)
        return self.logits.view(1, 1, -1)

    # -- launches
    def _linear(self, x: Tensor, m: Matrix, out: Tensor, norm: Tensor | None = None, residual: Tensor | None = None,
                glu: bool = False) -> None:
        """out = m(rmsnorm(x) * norm or x) (+ residual); glu: m has [gate | up] rows, out = silu(gate) * up."""
        rows, k = m.weight.shape
        n = rows // 2 if glu else rows
        args = (x, _or(norm, x), m.weight, _or(m.scale, x), _or(m.bias, x), _or(residual, x), out, n, k,
                m.weight.stride(0), self.eps)
        flags = {"NORM": norm is not None, "GLU": glu, "HAS_SCALE": m.scale is not None,
                 "HAS_BIAS": m.bias is not None, "HAS_RES": residual is not None}
        config = INTERPRETER_LINEAR if not x.is_cuda else _pick_linear(args, flags)
        _launch_linear(args, flags, config)

    def _attention(self, positions: Tensor, keys: Tensor, values: Tensor) -> None:
        args = (self.qkv, self.cos, self.sin, positions, keys, values, self.attn, keys.stride(0), keys.stride(1),
                self.cos.stride(0), self.sm_scale)
        flags = {"NUM_HEADS": self.cfg.num_attention_heads, "NUM_GROUPS": self.cfg.num_kv_heads,
                 "HEAD_DIM": self.cfg.head_dim}
        config = INTERPRETER_ATTENTION if not keys.is_cuda else _pick_attention(args, flags)
        _launch_attention(args, flags, config)


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def _or(t: Tensor | None, fallback: Tensor) -> Tensor:
    """A pointer for an argument the kernel's flags switch off."""
    return t if t is not None else fallback


def _launch_linear(args: tuple, flags: dict, config: tuple) -> None:
    from .glm_decode_triton import _linear_kernel

    bn, bk, nw, st = config
    n = args[7]
    _linear_kernel[(-(-n // bn),)](*args, **flags, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=st)


def _launch_attention(args: tuple, flags: dict, config: tuple) -> None:
    from .glm_decode_triton import _attention_kernel

    block_l, nw = config
    _attention_kernel[(flags["NUM_HEADS"],)](*args, **flags, BLOCK_L=block_l, num_warps=nw)


def _pick_linear(args: tuple, flags: dict) -> tuple:
    """The fastest config for this weight shape and these flags, timed once on scratch copies (28 layers' weights
    do not fit in L2: each timed launch reads a different copy, as decoding does)."""
    x, w, out = args[0], args[2], args[6]
    key = ("linear", *w.shape, w.dtype, x.dtype, *flags.values(), x.device)
    if key not in _chosen:
        from .gemv_triton import _graph_time

        scratch = out.clone()  # never the live buffers (the residual is read and written)
        copies = [w] + ([w.clone() for _ in range(3)] if w.numel() * w.element_size() < 2**28 else [])
        runs = [args[:2] + (c,) + args[3:5] + (scratch, scratch) + args[7:] for c in copies]
        times = {c: _graph_time(lambda c=c: [_launch_linear(a, flags, c) for a in runs]) for c in LINEAR_CONFIGS}
        _chosen[key] = min(times, key=times.get)
    return _chosen[key]


def _pick_attention(args: tuple, flags: dict) -> tuple:
    """The fastest (BLOCK_L, num_warps) for this cache length, timed at TIMING_POSITION on a scratch cache."""
    keys = args[4]
    key = ("attention", *keys.shape, keys.dtype, *flags.values(), keys.device)
    if key not in _chosen:
        from .gemv_triton import _graph_time

        position = torch.full((1,), min(TIMING_POSITION, keys.shape[1] - 1), dtype=torch.long, device=keys.device)
        scratch = (args[0], args[1], args[2], position, torch.randn_like(keys), torch.randn_like(keys),
                   args[6].clone(), *args[7:])
        times = {c: _graph_time(lambda c=c: _launch_attention(scratch, flags, c)) for c in ATTENTION_CONFIGS}
        _chosen[key] = min(times, key=times.get)
    return _chosen[key]
