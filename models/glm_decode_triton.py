"""Triton kernels of ChatGLM2's fused one-token decode step (models/glm_decode.py; imported only where triton is).

At batch 1 a decode step is bandwidth-bound matrix-vector products plus many tiny kernels between them (norms,
rotary, cache writes, attention for one query, SwiGLU, residual adds), each of which costs a launch and a gap on the
GPU. Here every layer is five kernels:

    linear(rmsnorm prologue, bias)        x -> qkv
    attention(rotary, cache write)        qkv -> per-head outputs
    linear(residual epilogue)             -> x
    linear(rmsnorm prologue, SwiGLU)      x -> silu(gate) * up
    linear(residual epilogue)             -> x

`_linear_kernel`: each program owns BLOCK_N output features and walks the input in BLOCK_K steps (wide coalesced
weight loads, BLOCK_N x BLOCK_K partial sums in registers, one reduction at the end), like models/gemv_triton.py but
never split over K: a split needs zeroed fp32 outputs and a cast, two more kernels. RMSNorm is linear in its scalar
1/rms, so the prologue multiplies the input by the norm weight while it sums the squares in the same loop and scales
the result once at the end. With GLU the matrix has 2N rows ([gate | up]) and a program reads rows n and N + n
together, so it can write silu(gate) * up itself. Weights are fp16/bf16, or int8 with one scale per output row.

`_attention_kernel`: one program per query head rotates its query and its group's new key (the (even, odd) pair
rotation of the first half of each head, from the model's full-width cos/sin tables), attends to positions 0..p
with an online softmax (the new key and value from registers, the earlier ones from the cache), and the first head
of each group writes the new key and value into the cache. Reading position p from registers, not the cache, keeps
the heads of a group free of a race with that write.
"""
from __future__ import annotations

import triton
import triton.language as tl

@triton.jit
def _linear_kernel(X, NORM_W, W, SCALE, BIAS, RES, Y, N, K, stride_w, eps,
                   NORM: tl.constexpr, GLU: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """a[r] = sum_k x[k] * W[r, k] (* SCALE[r]) (+ BIAS[r]) with x = rmsnorm(X) * NORM_W (NORM) or X;
    Y[n] = a[n], or silu(a[n]) * a[N + n] (GLU: W has 2N rows); then (+ RES[n])."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    w_rows = W + rows.to(tl.int64)[:, None] * stride_w
    w_up = W + (rows + N).to(tl.int64)[:, None] * stride_w
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        x = tl.load(X + cols, mask=col_ok, other=0.0).to(tl.float32)
        if NORM:
            squares += x * x
            x = x * tl.load(NORM_W + cols, mask=col_ok, other=0.0).to(tl.float32)
        tile_ok = row_ok[:, None] & col_ok[None, :]
        w = tl.load(w_rows + cols[None, :], mask=tile_ok, other=0.0, eviction_policy="evict_first")
        acc += w.to(tl.float32) * x[None, :]  # every weight is read once: L2 is kept for the vectors
        if GLU:
            w = tl.load(w_up + cols[None, :], mask=tile_ok, other=0.0, eviction_policy="evict_first")
            acc_up += w.to(tl.float32) * x[None, :]
    inv_rms = 1.0
    if NORM:
        inv_rms = tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
    y = _finish(acc, inv_rms, SCALE, BIAS, rows, row_ok, HAS_SCALE, HAS_BIAS)
    if GLU:
        up = _finish(acc_up, inv_rms, SCALE, BIAS, rows + N, row_ok, HAS_SCALE, HAS_BIAS)
        y = y / (1.0 + tl.exp(-y)) * up
    if HAS_RES:  # RES may be Y itself: a program reads and writes only its own rows
        y = y + tl.load(RES + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(Y + rows, y.to(Y.dtype.element_ty), mask=row_ok)


@triton.jit
def _finish(acc, inv_rms, SCALE, BIAS, rows, row_ok, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The rows' sums of products, normed, scaled (int8) and biased, in float32."""
    y = tl.sum(acc, axis=1) * inv_rms
    if HAS_SCALE:
        y = y * tl.load(SCALE + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(BIAS + rows, mask=row_ok, other=0.0).to(tl.float32)
    return y


@triton.jit
def _attention_kernel(QKV, COS, SIN, POS, CACHE_K, CACHE_V, OUT, stride_group, stride_pos, stride_table, sm_scale,
                      NUM_HEADS: tl.constexpr, NUM_GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK_L: tl.constexpr):
    """One query head: QKV = [q heads | k groups | v groups] of this token (before rotary), POS its position p;
    CACHE_K/V (groups, max_len, HEAD_DIM) slices of batch row 0. Writes OUT[head] and (first head of a group) the
    cache row p of the group."""
    head = tl.program_id(0)
    group = head // (NUM_HEADS // NUM_GROUPS)
    p = tl.load(POS).to(tl.int32)  # the attention loop runs to p: a 32-bit bound (positions < 32768)
    d = tl.arange(0, HEAD_DIM)
    cos = tl.load(COS + p * stride_table + d).to(tl.float32)
    sin = tl.load(SIN + p * stride_table + d).to(tl.float32)
    q_at = QKV + head * HEAD_DIM
    k_at = QKV + (NUM_HEADS + group) * HEAD_DIM
    v_at = QKV + (NUM_HEADS + NUM_GROUPS + group) * HEAD_DIM
    # x * cos + swap_pairs(x) * sin; d ^ 1 is the other member of d's (even, odd) pair
    q = tl.load(q_at + d).to(tl.float32) * cos + tl.load(q_at + (d ^ 1)).to(tl.float32) * sin
    k_new = (tl.load(k_at + d).to(tl.float32) * cos + tl.load(k_at + (d ^ 1)).to(tl.float32) * sin)
    k_new = k_new.to(CACHE_K.dtype.element_ty)
    v_new = tl.load(v_at + d).to(CACHE_V.dtype.element_ty)
    row_k = CACHE_K + group * stride_group
    row_v = CACHE_V + group * stride_group
    if head % (NUM_HEADS // NUM_GROUPS) == 0:
        tl.store(row_k + p * stride_pos + d, k_new)
        tl.store(row_v + p * stride_pos + d, v_new)
    # online softmax, started with the new position (read from registers, as the cache stores it)
    best = tl.sum(q * k_new.to(tl.float32), axis=0) * sm_scale
    total = best * 0.0 + 1.0
    acc = v_new.to(tl.float32)
    for start in range(0, p, BLOCK_L):
        pos = start + tl.arange(0, BLOCK_L)
        ok = pos < p
        keys = tl.load(row_k + pos[:, None] * stride_pos + d[None, :], mask=ok[:, None], other=0.0)
        scores = tl.sum(keys.to(tl.float32) * q[None, :], axis=1) * sm_scale
        scores = tl.where(ok, scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=0))
        shrink = tl.exp(best - new_best)
        weights = tl.exp(scores - new_best)
        values = tl.load(row_v + pos[:, None] * stride_pos + d[None, :], mask=ok[:, None], other=0.0)
        acc = acc * shrink + tl.sum(weights[:, None] * values.to(tl.float32), axis=0)
        total = total * shrink + tl.sum(weights, axis=0)
        best = new_best
    tl.store(OUT + head * HEAD_DIM + d, (acc / total).to(OUT.dtype.element_ty))
