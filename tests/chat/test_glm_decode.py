"""ChatGLM2's fused one-token decode step (models/glm_decode.py) against the model's own decode: logits and the K/V
it writes into the cache, fp and int8 weights (triton's CPU interpreter where triton is installed, and on a GPU);
and the prefill replayed from CUDA graphs (models/chatglm2.py CudaGraphPrefill) against the eager prefill."""
from __future__ import annotations

import copy
import textwrap

import pytest
import torch

from models.chatglm2 import ChatGLM2Config, ChatGLM2ForCausalLM, CudaGraphDecoder, CudaGraphPrefill
from models.gemv import swap_linears
from models.glm_decode import supports
from tests.triton_interpreter import interpreted_error

# FusedDecodeStep vs model: the model's decode of the same tokens at the same positions, each into its own cache
CHECK = textwrap.dedent("""
    import copy, torch
    from models.chatglm2 import ChatGLM2Config, ChatGLM2ForCausalLM
    from models.gemv import swap_linears
    from models.glm_decode import FusedDecodeStep
    torch.manual_seed(0)
    cfg = ChatGLM2Config(num_layers=2, hidden_size=64, num_attention_heads=4, kv_channels=16, ffn_hidden_size=96,
                         padded_vocab_size=200, seq_length=64)
    model = ChatGLM2ForCausalLM(cfg).eval().requires_grad_(False)
    model.init_synthetic_(torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.uniform_(0.5, 1.5)  # norm weights and the QKV bias away from 1 and 0
    worst = 0.0
    for int8 in (False, True):
        m = swap_linears(copy.deepcopy(model), int8=True) if int8 else model
        caches = [m.allocate_cache(1, 16) for _ in range(2)]
        prompt = torch.randint(0, 200, (1, 5))
        for c in caches:
            m(prompt, torch.arange(5), c)
        step, token = FusedDecodeStep(m), torch.tensor([[7]])
        for pos in range(5, 12):  # 7 steps: attention over 5..11 cached positions
            p = torch.tensor([pos])
            want = m(token, p, caches[0]).double()
            got = step(token, p, caches[1]).double()
            worst = max(worst, float((got - want).norm() / want.norm()))
            for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
                worst = max(worst, float((a - b).abs().max() / a.abs().max()))
            token = want[0, -1].argmax().view(1, 1)
    print(worst)
""")


def test_fused_step_equals_the_model_in_the_triton_interpreter():
    """Rotary (the (even, odd) pair swap), the cache write by each group's first head, the online softmax over the
    cached positions, RMSNorm / SwiGLU prologues, bias and residual epilogues, int8 scales: all of them change the
    logits or the cache when wrong (checked by breaking the pair swap and the cache write: errors 0.3-4)."""
    pytest.importorskip("triton")
    worst = interpreted_error(CHECK, timeout=600)
    print(f"worst relative error {worst:.2e}")
    assert worst < 1e-5  # float32: summation order only


def test_supports_names_what_it_does_not_implement():
    tiny = dict(num_layers=1, hidden_size=64, num_attention_heads=4, kv_channels=16, ffn_hidden_size=32,
                padded_vocab_size=100, seq_length=32)
    assert supports(ChatGLM2ForCausalLM(ChatGLM2Config(**tiny))) == ""
    assert "power-of-two" in supports(ChatGLM2ForCausalLM(ChatGLM2Config(**tiny | {"kv_channels": 24})))
    assert "residual" in supports(ChatGLM2ForCausalLM(
        ChatGLM2Config(**tiny | {"apply_residual_connection_post_layernorm": True})))


# ------------------------------------------------------------------------------------------ GPU
MID = ChatGLM2Config(num_layers=4, hidden_size=1024, num_attention_heads=8, kv_channels=128, ffn_hidden_size=2048,
                     padded_vocab_size=8192, seq_length=1024)


def _mid_model(dtype: torch.dtype) -> ChatGLM2ForCausalLM:
    model = ChatGLM2ForCausalLM(MID).to("cuda", dtype).eval().requires_grad_(False)
    model.init_synthetic_(torch.Generator(device="cuda").manual_seed(0))
    return model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("int8", [False, True])
def test_fused_step_in_a_cuda_graph_follows_the_model_on_the_gpu(int8):
    """fp16, 64 greedy steps after a 40-token prompt: the same tokens as the model's own decode (teacher-forced from
    the model's picks, so one near tie cannot derail the rest) and logits within fp16 summation-order error."""
    pytest.importorskip("triton")
    from models.glm_decode import FusedDecodeStep

    model = _mid_model(torch.float16)
    model = swap_linears(model, int8=True) if int8 else model
    caches = [model.allocate_cache(1, 256) for _ in range(2)]
    decoder = CudaGraphDecoder(FusedDecodeStep(model), caches[1])  # captures at position 0, before the prefill
    prompt = torch.randint(100, 8000, (1, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    for c in caches:
        model(prompt, torch.arange(40, device="cuda"), c)
    token, agree, worst = torch.tensor([[5]], device="cuda"), 0, 0.0
    for pos in range(40, 104):
        p = torch.tensor([pos], device="cuda")
        want = model(token, p, caches[0]).float()
        got = decoder(token, p, caches[1]).float()
        worst = max(worst, float((got - want).norm() / want.norm()))
        agree += int(got.argmax() == want.argmax())
        token = want[0, -1].argmax().view(1, 1)
    print(f"relative logit error {worst:.2e}, top-1 agreement {agree}/64")
    assert worst < 1e-2 and agree >= 62
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        assert float((a[:, :, :104] - b[:, :, :104]).abs().max()) < 2e-2 * float(a.abs().max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_prefill_equals_the_eager_prefill_on_the_gpu():
    """Prompts of 5 and 40 tokens from positions 0 and 17 (a cached prefix): the padded graph's logits of the last
    real token and the K/V of the real positions equal the eager prefill's; a prompt longer than every captured
    length returns None (the caller prefills eagerly)."""
    model = _mid_model(torch.float16)
    caches = [model.allocate_cache(1, 256) for _ in range(2)]
    prefill = CudaGraphPrefill(model, caches[1], lengths=(8, 64))
    gen = torch.Generator("cuda").manual_seed(2)
    for start, size in ((0, 5), (17, 40)):
        prefix = torch.randint(100, 8000, (1, start), device="cuda", generator=gen)
        for c in caches:  # the same cached prefix in both (it also overwrites the first prompt's padding)
            model(prefix, torch.arange(start, device="cuda"), c) if start else None
        ids = torch.randint(100, 8000, (1, size), device="cuda", generator=gen)
        want = model(ids, torch.arange(start, start + size, device="cuda"), caches[0], last_only=True).float()
        got = prefill(ids, start, caches[1]).float()
        assert float((got - want).abs().max()) < 1e-2 * float(want.abs().max())
        for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
            real = slice(start, start + size)
            assert float((a[:, :, real] - b[:, :, real]).abs().max()) < 1e-2 * float(a.abs().max())
    assert prefill(torch.zeros((1, 65), dtype=torch.long, device="cuda"), 0, caches[1]) is None
    assert prefill(torch.zeros((1, 60), dtype=torch.long, device="cuda"), 200, caches[1]) is None  # past the end


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_graph_of_the_fused_step_writes_only_its_own_buffers():
    """The graph writes the fused step's work buffers on every replay: the decoder must keep the step (and so those
    buffers) alive, or tensors allocated afterwards land on them and are overwritten (a review found exactly that:
    the int8 benchmark's first token was overwritten and indexed the embedding out of range)."""
    pytest.importorskip("triton")
    from models.glm_decode import FusedDecodeStep

    model = _mid_model(torch.float16)
    cache = model.allocate_cache(1, 256)
    decoder = CudaGraphDecoder(FusedDecodeStep(model), cache)
    bystanders = [torch.full((n,), 7.0, device="cuda") for n in (1024, 1152, 2048, 4096) for _ in range(64)]
    decoder(torch.tensor([[5]], device="cuda"), torch.tensor([3], device="cuda"), cache)
    torch.cuda.synchronize()
    assert all(bool((t == 7.0).all()) for t in bystanders)
