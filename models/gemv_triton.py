"""Triton matrix-vector kernels for one-token decoding (imported only where triton is installed).

At batch 1 a linear layer reads its whole weight matrix to make one output row: the time is bytes / bandwidth, and
cuBLAS's general kernels reach only part of the bandwidth for the layer shapes of a 6B model. Here each program
owns BLOCK_N output features and walks the input dimension in BLOCK_K steps with wide, coalesced loads, keeping
BLOCK_N x BLOCK_K partial sums in registers (one reduction at the end); SPLIT_K > 1 splits the input dimension over
programs (atomic fp32 adds) so matrices with few rows still fill every multiprocessor. Weights may be fp16/bf16 or
int8 with one float scale per output feature (weight-only quantisation: half the bytes, the same arithmetic in fp32).
Registered as custom ops so CUDA graphs and torch.compile keep them as single kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gemv_kernel(X, W, SCALE, BIAS, Y, N, K, stride_w, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """Y[n] (+)= sum_k X[k] * W[n, k] (* SCALE[n]) (+ BIAS[n]); Y is fp32 when SPLIT_K > 1 (atomic adds)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    w_rows = W + rows.to(tl.int64)[:, None] * stride_w
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * k_per_split
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(k_start, tl.minimum(k_start + k_per_split, K), BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        x = tl.load(X + cols, mask=col_ok, other=0.0).to(tl.float32)
        w = tl.load(w_rows + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0,
                    eviction_policy="evict_first")  # every weight is read once: keep L2 for the vector
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_SCALE:
        y = y * tl.load(SCALE + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        if pid_k == 0:
            y = y + tl.load(BIAS + rows, mask=row_ok, other=0.0).to(tl.float32)
    if SPLIT_K == 1:
        tl.store(Y + rows, y.to(Y.dtype.element_ty), mask=row_ok)
    else:
        tl.atomic_add(Y + rows, y, mask=row_ok, sem="relaxed")


# (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages): chosen per (N, K, dtype) by timing on the card at first use.
# Stages > 1 let the loop keep several weight tiles in flight per program: a matrix-vector product has nothing to
# hide memory latency behind but other loads.
CONFIGS = [(bn, bk, sk, nw, st) for bn, bk, nw in ((4, 512, 4), (8, 256, 4), (8, 512, 4), (16, 256, 8), (2, 1024, 4))
           for sk in (1, 2, 4) for st in (1, 3)]
_chosen: dict[tuple, tuple[int, int, int, int, int]] = {}


def _run(args: tuple, flags: dict, config: tuple[int, int, int, int, int], n: int) -> None:
    bn, bk, sk, nw, st = config
    _gemv_kernel[(triton.cdiv(n, bn), sk)](*args, **flags, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk, num_warps=nw,
                                           num_stages=st)


def _pick(x: torch.Tensor, weight: torch.Tensor, flags: dict) -> tuple[int, int, int, int, int]:
    """The fastest config for this shape, timed once (before any CUDA-graph capture: decoders warm up first).
    Timed in a CUDA graph of several launches, as decoding runs it: Python's launch cost (~20 us) would otherwise
    hide the kernel (~10 us for a 4096 x 4096 matrix)."""
    key = (*weight.shape, weight.dtype, x.dtype, flags["HAS_SCALE"], flags["HAS_BIAS"], x.device)
    if key not in _chosen:
        n, k = weight.shape
        y = torch.zeros(n, dtype=torch.float32, device=x.device)
        small = weight.numel() * weight.element_size() < 2**28  # copies beat the L2 cache, as 28 layers do
        copies = [weight] + ([weight.clone() for _ in range(3)] if small else [])
        runs = [(x, w, x, x, y, n, k, w.stride(0)) for w in copies]
        times = {c: _graph_time(lambda c=c: [_run(a, flags, c, n) for a in runs]) for c in CONFIGS}
        _chosen[key] = min(times, key=times.get)
    return _chosen[key]


def _graph_time(fn, launches: int = 8) -> float:
    """Median ms per call of fn replayed from a CUDA graph of `launches` calls."""
    fn()  # compile the variant outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other app threads may use CUDA meanwhile
        for _ in range(launches):
            fn()
    return triton.testing.do_bench(graph.replay, warmup=5, rep=30, return_mode="median") / launches


def _launch(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
            out_dtype: torch.dtype) -> torch.Tensor:
    n, k = weight.shape
    x = x.reshape(k).contiguous()
    flags = {"HAS_SCALE": scale is not None, "HAS_BIAS": bias is not None}
    if not x.is_cuda:  # TRITON_INTERPRET=1: checking the kernel on a CPU, one split and two
        y = torch.zeros(n, dtype=torch.float32, device=x.device)
        _run((x, weight, scale if scale is not None else x, bias if bias is not None else x, y, n, k,
              weight.stride(0)), flags, (4, 32, 2, 1, 1), n)
        return y.to(out_dtype)
    with torch.cuda.device(x.device):  # triton launches on the current device's stream
        config = _pick(x, weight, flags)
        split = config[2] > 1  # split-K adds into fp32 zeros; one split stores the output dtype directly
        y = torch.zeros(n, dtype=torch.float32, device=x.device) if split else torch.empty(n, dtype=out_dtype,
                                                                                             device=x.device)
        _run((x, weight, scale if scale is not None else x, bias if bias is not None else x, y, n, k,
              weight.stride(0)), flags, config, n)
    return y.to(out_dtype) if split else y


@torch.library.custom_op("avatar::gemv", mutates_args=())
def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (..., K) holding one row, weight (N, K) fp16/bf16, bias (N,) or empty -> (..., N) in x's dtype."""
    y = _launch(x, weight, None, bias if bias.numel() else None, x.dtype)
    return y.view(*x.shape[:-1], weight.shape[0])


@gemv.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("avatar::gemv_int8", mutates_args=())
def gemv_int8(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (..., K) one row, weight (N, K) int8, scale (N,) float: y = (x @ weight.T) * scale (+ bias)."""
    y = _launch(x, weight, scale, bias if bias.numel() else None, x.dtype)
    return y.view(*x.shape[:-1], weight.shape[0])


@gemv_int8.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])
