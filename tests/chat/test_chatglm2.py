"""ChatGLM2: parity with the official remote code on seeded tiny weights (../shared/reference), both folder layouts,
tokenizer ids, streaming text, context budget, strict loading. GPU tests: half precision and the CUDA-graph decoder."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avatar.chat.chatglm2 import ChatGLM2Backend, ChatGLM2Tokenizer, GenerationParams, TextStream, build_prompt, load_model
from avatar.core.errors import AvatarError, BackendUnavailable, TextTooLong, WeightsError
from models.chatglm2 import ChatGLM2Config, ChatGLM2ForCausalLM

SHARED = Path(__file__).resolve().parents[3] / "shared"
REF = SHARED / "reference"
sys.path.insert(0, str(SHARED / "tools"))
from seeded_weights import seeded_state_dict  # noqa: E402

QUERY = "你好，请用English介绍一下你自己。"
GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0, repetition_penalty=1.0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def ref():
    return np.load(REF / "chatglm2_parity.npz")


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    return seeded_state_dict(str(REF / "chatglm2_tiny.tsv"), 1234)


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_bytes((REF / "chatglm2_tiny_config.json").read_bytes())
    (path / "tokenizer.model").write_bytes((REF / "chatglm2_tokenizer.model").read_bytes())
    return path


def _write_bin_shards(folder: Path, state: dict[str, torch.Tensor]) -> None:
    keys = list(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, start=1):
        name = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({k: state[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, seeded) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("chatglm2")
    st = _folder(base / "safetensors")
    save_file(seeded, st / "model.safetensors")
    shards = _folder(base / "bin")
    _write_bin_shards(shards, seeded)
    return {"safetensors": st, "bin": shards}


@pytest.fixture(scope="module")
def backend(folders) -> ChatGLM2Backend:
    return ChatGLM2Backend.load(folders["safetensors"], device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tokenizer() -> ChatGLM2Tokenizer:
    return ChatGLM2Tokenizer.load(REF / "chatglm2_tokenizer.model")


def test_state_dict_keys_and_shapes_equal_the_official_manifest():
    cfg = ChatGLM2Config.from_dict(json.loads((REF / "chatglm2_tiny_config.json").read_text()))
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_pairs) == (2, 16, 4)
    manifest = [line.split("\t") for line in (REF / "chatglm2_tiny.tsv").read_text().splitlines() if line]
    expected = {key: tuple(int(n) for n in shape.split(",")) for key, shape, _ in manifest}
    got = {k: tuple(v.shape) for k, v in ChatGLM2ForCausalLM(cfg).state_dict().items()}
    assert got == expected


def test_logits_and_hidden_states_match_official(backend, ref):
    ids = torch.from_numpy(ref["in_input_ids"])
    positions = torch.from_numpy(ref["in_position_ids"][0])
    with torch.inference_mode():
        logits = backend.model(ids, positions)
        _, states = backend.model.transformer(ids, positions, return_states=True)
    assert np.abs(logits.numpy() - ref["logits"]).max() < 1e-4
    for i in range(3):  # official hidden states are (seq, batch, hidden)
        assert np.abs(states[i].transpose(0, 1).numpy() - ref[f"hidden_state_{i}"]).max() < 5e-5


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_both_folder_layouts_load_the_exact_weights(folders, seeded, layout):
    model = load_model(folders[layout], device="cpu", dtype="float32")
    loaded = model.state_dict()
    assert set(loaded) == set(seeded)
    for key, value in seeded.items():
        assert torch.equal(loaded[key], value), key
    assert model.transformer.rotary_pos_emb.cos.shape == (512, 16)  # rebuilt after the meta-device build


def test_greedy_decoding_with_kv_cache_reproduces_official_tokens(backend, ref):
    prompt = ref["in_input_ids"][0].tolist()
    first = list(backend.generate_ids(prompt, GREEDY))
    assert first == ref["new_token_ids"][0].tolist()
    # second turn on the same prompt reuses the cached prefix (prefills one token): same tokens
    assert list(backend.generate_ids(prompt, GREEDY)) == first


def test_the_cached_prefix_stays_true_after_a_token_limit_an_early_stop_and_eos(backend, ref):
    """The next step is queued before the host reads a token: the ids the cache claims to hold must still be the
    ones whose K/V it holds, or a later turn that reuses the prefix decodes other tokens than a cold prefill."""
    import dataclasses

    prompt, short = ref["in_input_ids"][0].tolist(), dataclasses.replace(GREEDY, max_new_tokens=5)

    def reused_and_cold(ids: list[int]) -> tuple[list[int], list[int]]:
        reused = list(backend.generate_ids(ids, short))
        backend._cached_ids = []  # a cold cache: the whole prompt is prefilled
        return reused, list(backend.generate_ids(ids, short))

    cut = list(backend.generate_ids(prompt, short))  # stopped by the limit: the last token was never stepped
    reused, cold = reused_and_cold(prompt + cut + cut[:2])
    assert reused == cold
    stream = backend.generate_ids(prompt, GREEDY)
    early = [next(stream), next(stream)]  # the caller stops after two tokens (a cancelled turn)
    stream.close()
    reused, cold = reused_and_cold(prompt + early + cut[:1])
    assert reused == cold


def test_cached_decode_logits_equal_full_forward(backend, ref):
    ids = torch.from_numpy(ref["generated_ids"])  # prompt + 16 greedy tokens
    model, n = backend.model, ids.shape[1]
    with torch.inference_mode():
        full = model(ids, torch.arange(n))[0]
        cache = model.allocate_cache(1, 64)
        steps = [model(ids[:, :24], torch.arange(24), cache, last_only=True)[0, -1]]
        steps += [model(ids[:, p:p + 1], torch.tensor([p]), cache)[0, -1] for p in range(24, n)]
    assert (torch.stack(steps) - full[23:]).abs().max() < 1e-4


def test_tokenizer_reproduces_official_ids(tokenizer, ref):
    prompt = build_prompt(QUERY, [])
    assert prompt == json.loads(str(ref["meta_json"]))["prompt"]
    assert tokenizer.encode_prompt(prompt) == ref["in_input_ids"][0].tolist()
    assert tokenizer.prefix_ids == [64790, 64792]
    assert (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id) == (64794, 2, 0)
    assert tokenizer.decode(ref["in_input_ids"][0].tolist()) == prompt


def test_prompt_format_with_history():
    prompt = build_prompt("三", [("一", "1"), ("二", "2")])
    assert prompt == "[Round 1]\n\n问：一\n\n答：1\n\n[Round 2]\n\n问：二\n\n答：2\n\n[Round 3]\n\n问：三\n\n答："


def test_stream_deltas_concatenate_to_the_full_decode(backend, tokenizer, ref):
    deltas = list(backend.stream([], QUERY, max_new_tokens=16, temperature=0.0, repetition_penalty=1.0))
    full = tokenizer.decode(ref["new_token_ids"][0].tolist()).strip()
    assert len(deltas) > 3 and all(deltas)
    assert "".join(deltas) == full


def test_text_stream_never_emits_half_characters(tokenizer):
    text = "你好，𠀀世界 鿏🫠x\n\n结束。"
    ids = tokenizer.encode(text)
    assert sum(tokenizer.sp.is_byte(i) for i in ids) >= 8  # the rare characters really are byte pieces
    stream = TextStream(tokenizer)
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) == text


def test_text_stream_replaces_training_time_mark(tokenizer):
    stream = TextStream(tokenizer)
    deltas = [stream.push(i) for i in tokenizer.encode("  我的数据截至[[训练时间]]。 ")] + [stream.finish()]
    assert not any("[" in d for d in deltas)
    assert "".join(deltas) == "我的数据截至2023年。" == stream.text()


def test_context_budget_drops_oldest_rounds_and_keeps_persona(backend, tokenizer):
    history = [(f"问题{i}：" + "很长的句子。" * 10, f"回答{i}。") for i in range(1, 6)]
    everything = backend.prompt_ids(history, "最后的问题", system="你是小助手。", context_tokens=4096)
    kept_all = tokenizer.decode(everything)
    assert kept_all.startswith("[Round 1]\n\n问：你是小助手。\n\n问题1：") and "[Round 6]" in kept_all
    budget = len(everything) - 40  # too small for all five old rounds
    ids = backend.prompt_ids(history, "最后的问题", system="你是小助手。", context_tokens=budget)
    text = tokenizer.decode(ids)
    assert len(ids) <= budget and ids[:2] == [64790, 64792]
    assert "问题1：" not in text and "问题5：" in text and text.endswith("问：最后的问题\n\n答：")
    assert text.startswith("[Round 1]\n\n问：你是小助手。\n\n问题")  # persona moved to the first kept round
    with pytest.raises(TextTooLong):
        backend.prompt_ids([], "最后的问题" * 50, context_tokens=64)


def test_sampling_is_reproducible_per_seed(backend, ref):
    prompt = ref["in_input_ids"][0].tolist()
    opts = GenerationParams(max_new_tokens=12, temperature=0.9, top_p=0.8, repetition_penalty=1.2, seed=7)
    a = list(backend.generate_ids(prompt, opts))
    b = list(backend.generate_ids(prompt, opts))
    c = list(backend.generate_ids(prompt, GenerationParams(12, 0.9, 0.8, 1.2, seed=8)))
    assert a == b and a != c
    assert max(a + c) < backend.tokenizer.vocab_size


def test_strict_loader_lists_missing_and_unexpected_keys(tmp_path, seeded):
    folder = _folder(tmp_path / "bad")
    state = dict(seeded)
    del state["transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"]
    state["transformer.encoder.layers.2.mlp.extra.weight"] = torch.zeros(3)
    state["transformer.encoder.final_layernorm.weight"] = torch.ones(65)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(WeightsError) as err:
        load_model(folder, device="cpu", dtype="float32")
    msg = str(err.value)
    assert "missing keys (1): transformer.encoder.layers.1.mlp.dense_4h_to_h.weight" in msg
    assert "unexpected keys (1): transformer.encoder.layers.2.mlp.extra.weight" in msg
    assert "transformer.encoder.final_layernorm.weight (65,) != (64,)" in msg


def test_folder_without_weights_or_with_missing_shard_is_a_weights_error(tmp_path, folders):
    empty = _folder(tmp_path / "empty")
    with pytest.raises(WeightsError, match="no ChatGLM2 weights"):
        load_model(empty, device="cpu")
    broken = _folder(tmp_path / "broken")
    index = json.loads((folders["bin"] / "pytorch_model.bin.index.json").read_text())
    (broken / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="pytorch_model-00001-of-00002.bin"):
        load_model(broken, device="cpu")


@pytest.mark.gpu
@needs_cuda
def test_a_fused_step_that_cannot_be_built_falls_back_to_the_model_graph(folders, ref, monkeypatch, caplog):
    import models.glm_decode

    def broken(model):
        raise SyntaxError("triton could not compile the kernel")  # not a RuntimeError, as triton's own errors

    monkeypatch.setattr(models.glm_decode, "FusedDecodeStep", broken)
    torch.backends.cuda.matmul.allow_tf32 = False
    with caplog.at_level(logging.WARNING, logger="avatar.chat"):
        backend = ChatGLM2Backend.load(folders["safetensors"], device="cuda", dtype="float32", decode="fused")
        tokens = list(backend.generate_ids(ref["in_input_ids"][0].tolist(), GREEDY))
    assert tokens == ref["new_token_ids"][0].tolist()
    assert backend.decode == "graph" and backend._decoder is not None
    assert "fused decode step is unavailable (SyntaxError" in caplog.text


def test_quantize_modes_need_a_gpu_and_unknown_ones_are_named(folders):
    with pytest.raises(BackendUnavailable, match="int8 quantization needs a CUDA GPU"):
        load_model(folders["safetensors"], device="cpu", quantize="int8")
    with pytest.raises(AvatarError, match="'int8', '8bit' or '4bit'"):
        load_model(folders["safetensors"], device="cpu", quantize="int4")


@pytest.mark.gpu
@needs_cuda
def test_int8_weights_decode_from_cuda_graphs_close_to_fp16(folders, ref):
    """quantize = "int8": every linear holds int8 rows with a scale (half the bytes), the decode and prefill graphs
    still run, and the logits stay within quantisation error of fp16."""
    pytest.importorskip("triton")
    from models.gemv import Int8Linear

    backend = ChatGLM2Backend.load(folders["safetensors"], device="cuda", dtype="float16", quantize="int8")
    assert backend.use_cuda_graph and any(isinstance(m, Int8Linear) for m in backend.model.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in backend.model.modules())
    prompt = ref["in_input_ids"][0].tolist()
    tokens = list(backend.generate_ids(prompt, GREEDY))
    assert backend._decoder is not None and backend._prefill_graphs is not None and len(tokens) > 0
    fp16 = load_model(folders["safetensors"], device="cuda", dtype="float16")
    ids = torch.tensor([prompt], device="cuda")
    with torch.inference_mode():
        want = fp16(ids, torch.arange(ids.shape[1], device="cuda")).float()
        got = backend.model(ids, torch.arange(ids.shape[1], device="cuda")).float()
    assert float((got - want).norm() / want.norm()) < 0.06  # the CPU int8 test's bound (tests/chat/test_gemv.py)


@pytest.mark.gpu
@needs_cuda
# measured on CPU: fp16 max 0.012 mean 0.0014; bf16 max 0.083 mean 0.011 (logit std 1.0)
@pytest.mark.parametrize("dtype, max_err, mean_err", [("float16", 0.05, 0.005), ("bfloat16", 0.25, 0.03)])
def test_half_precision_logits_close_to_fp32(folders, ref, dtype, max_err, mean_err):
    model = load_model(folders["safetensors"], device="cuda", dtype=dtype)
    ids = torch.from_numpy(ref["in_input_ids"]).cuda()
    with torch.inference_mode():
        logits = model(ids, torch.arange(ids.shape[1], device="cuda")).float().cpu().numpy()
    err = np.abs(logits - ref["logits"])
    assert err.max() < max_err and err.mean() < mean_err


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("decode", ["graph", "fused"])
def test_cuda_graph_greedy_decoding_matches_official(folders, ref, decode):
    """The decode step replayed from a CUDA graph (the model's, or the fused Triton step's), the prompt prefilled
    from a graph of its padded length: the official greedy tokens, in a first and a cached-prefix turn."""
    if decode == "fused":
        pytest.importorskip("triton")
    torch.backends.cuda.matmul.allow_tf32 = False
    backend = ChatGLM2Backend.load(folders["safetensors"], device="cuda", dtype="float32", decode=decode)
    assert backend.use_cuda_graph
    prompt = ref["in_input_ids"][0].tolist()
    assert list(backend.generate_ids(prompt, GREEDY)) == ref["new_token_ids"][0].tolist()
    assert backend._decoder is not None and backend._prefill_graphs is not None  # the graphs really ran
    assert backend.decode == decode
    assert list(backend.generate_ids(prompt, GREEDY)) == ref["new_token_ids"][0].tolist()  # cached-prefix turn


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_and_eager_fp16_decoding_agree(folders, ref):
    prompt = ref["in_input_ids"][0].tolist()
    opts = GenerationParams(max_new_tokens=32, temperature=0.8, top_p=0.9, repetition_penalty=1.1, seed=3)
    runs = []
    for graph in (True, False):
        backend = ChatGLM2Backend.load(folders["safetensors"], device="cuda", dtype="float16", cuda_graph=graph)
        runs.append(list(backend.generate_ids(prompt, opts)))
        assert (backend._decoder is not None) == graph
    assert runs[0] == runs[1]
