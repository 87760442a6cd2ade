#!/usr/bin/env python3
"""Writes the original design's weights at their real sizes, with seeded random values, in the official file
layout, plus a config that runs the app on them: EAT (ckpt/, expPCAnorm_fin/, pad.npy and a DeepSpeech v0.1.0-sized
frozen graph), GFPGAN v1.4, ChatGLM2-6B (config.json, the real tokenizer, fp16 safetensors shards). For latency
measurements on a GPU without the real checkpoints (whose numbers would be the same: same shapes, same kernels);
the outputs are noise, and the chat model's replies random tokens.

    python scripts/make_seeded_weights.py /tmp/seeded                    # ~13 GB, a few minutes (once)
    python -m avatar --config /tmp/seeded/gpu_turn.toml bench --turns 10 --json
    python scripts/make_seeded_weights.py /tmp/seeded --chat-layers 2    # small chat model (a CPU smoke test)

Values come from ../shared/tools/seeded_weights.py (rule "seeded-v1") and the manifests in ../shared/reference
(eat.tsv, gfpgan_v1.4.tsv; ChatGLM2-6B's manifest is written from our network's own state_dict). Files already in
place are kept (delete the folder to make them again).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 1234
SHARD_BYTES = 2 * 1024 ** 3
DS_HIDDEN = 2048  # DeepSpeech v0.1.0: dense layers and LSTM cells of 2048 units (the LSTM's input is 4096 wide)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the weights folder to write (weights_dir of the config it writes)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder with tools/ and reference/")
    p.add_argument("--chat-layers", type=int, default=28, help="ChatGLM2 layers (28 = the real 6B model)")
    p.add_argument("--device", default="cuda", help="device of the config it writes")
    p.add_argument("--whisper-tokenizer", type=Path, default=None,
                   help="tokenizer.json for the Whisper folder (default: the packaged Whisper base's)")
    return p.parse_args(argv)


def seeded(shared: Path, manifest: Path) -> dict[str, torch.Tensor]:
    from seeded_weights import seeded_state_dict

    return seeded_state_dict(str(manifest), SEED)


# ---------------------------------------------------------------- EAT
def write_eat(root: Path) -> None:
    """The authors' release layout (ckpt/ with two checkpoints, expPCAnorm_fin/, pad.npy), as the EAT tests write
    it, with a DeepSpeech graph of the real size instead of their tiny one."""
    from avatar.head.eat.deepspeech import DEEPSPEECH_FILE

    if (root / "ckpt" / "deepprompt_eam3d_all_final_313.pth.tar").is_file():
        return
    from tests.head.test_eat_engine import _write_eat_dir

    if root.exists():
        shutil.rmtree(root)  # a run stopped half way
    _write_eat_dir(root)
    write_deepspeech(root / DEEPSPEECH_FILE)


def write_deepspeech(path: Path) -> None:
    """A frozen TF1 graph in DeepSpeech v0.1.0's official layout and sizes (tests/head/deepspeech_graphs.py: constants
    h1/b1..h6/b6 and bidirectional_rnn/{fw,bw}/basic_lstm_cell/{kernel,bias}, TensorFlow's BasicLSTMCell):
    494 -> dense 2048, 2048, 4096 (clipped ReLU) -> bidirectional LSTM 2048 -> dense 2048 -> 29 logits, time-major,
    random weights (~123 M parameters, as the real one), so the feature extraction costs what it costs with the real
    graph, through TensorFlow or the PyTorch port."""
    from tests.head.deepspeech_graphs import write_official_deepspeech

    write_official_deepspeech(path, n_hidden=DS_HIDDEN, seed=7)


# ---------------------------------------------------------------- GFPGAN
def write_gfpgan(path: Path, shared: Path) -> None:
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": seeded(shared, shared / "reference" / "gfpgan_v1.4.tsv")}, path)


# ---------------------------------------------------------------- ChatGLM2-6B
def write_chatglm2(folder: Path, shared: Path, layers: int) -> None:
    """config.json, the real tokenizer.model and fp16 safetensors shards with an index, as the official folder."""
    from dataclasses import asdict, replace

    from safetensors.torch import save_file

    from models.chatglm2 import ChatGLM2Config, ChatGLM2ForCausalLM

    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    cfg = replace(ChatGLM2Config(), num_layers=layers)
    (folder / "config.json").write_text(json.dumps({**asdict(cfg), "model_type": "chatglm",
                                                    "architectures": ["ChatGLMModel"]}, indent=1))
    shutil.copy(shared / "reference" / "chatglm2_tokenizer.model", folder / "tokenizer.model")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ChatGLM2ForCausalLM(cfg).state_dict().items()}
    manifest = folder / "manifest.tsv"
    manifest.write_text("".join(f"{k}\t{','.join(map(str, s))}\tfloat32\n" for k, s in shapes.items()))
    weight_map, shard, size, index = {}, {}, 0, 1
    for key, tensor in seeded(shared, manifest).items():
        shard[key] = tensor.to(torch.float16)
        size += shard[key].numel() * 2
        if size >= SHARD_BYTES:
            weight_map.update(_save_shard(save_file, folder, shard, index))
            shard, size, index = {}, 0, index + 1
    if shard:
        weight_map.update(_save_shard(save_file, folder, shard, index))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))
    manifest.unlink()


def _save_shard(save_file, folder: Path, shard: dict, index: int) -> dict[str, str]:
    name = f"model-{index:05d}.safetensors"
    save_file({k: v.contiguous() for k, v in shard.items()}, str(folder / name))
    return {k: name for k in shard}


# ---------------------------------------------------------------- Whisper base (Hugging Face format)
WHISPER_BASE = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "vocab_size": 51865,
                "num_mel_bins": 80, "bos_token_id": 50257, "eos_token_id": 50257, "pad_token_id": 50257,
                "decoder_start_token_id": 50258, "begin_suppress_tokens": [220, 50257]}


def write_whisper(folder: Path, tokenizer: Path | None = None) -> bool:
    """Whisper base's sizes (74 M parameters) in Hugging Face format for [asr] backend = "whisper-hf": config.json,
    fp16 model.safetensors with random weights (torch seed SEED), and a real tokenizer.json (the special token ids
    must be Whisper's). False, after saying why, when no tokenizer.json is found: the folder is then not written."""
    if (folder / "tokenizer.json").is_file():  # written last
        return True
    source = tokenizer or _packaged_whisper_tokenizer()
    if source is None or not source.is_file():
        print(f"no Whisper tokenizer.json ({source or 'the packaged Whisper base is not installed'}): {folder} not "
              "written, the config keeps the packaged Whisper; pass --whisper-tokenizer PATH", file=sys.stderr)
        return False
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(WhisperConfig(**WHISPER_BASE)).to(torch.float16)
    model.save_pretrained(folder)  # config.json, generation_config.json, model.safetensors
    shutil.copyfile(source, folder / "tokenizer.json")
    return True


def _packaged_whisper_tokenizer() -> Path | None:
    from avatar.asr.whisper import packaged_tokenizer
    from avatar.core.errors import BackendUnavailable

    try:
        return packaged_tokenizer()
    except BackendUnavailable:
        return None


# ---------------------------------------------------------------- config
def write_config(out: Path, device: str) -> Path:
    path = out / "gpu_turn.toml"
    path.write_text(f'''# The original design's stack on seeded weights (scripts/make_seeded_weights.py): latency only
weights_dir = "{out.resolve()}"
device = "{device}"
output_dir = "/tmp/avatar-seeded-outputs"

{_asr_section(out)}
[chat]
backend = "chatglm2"     # ChatGLM2-6B in process, fp16
model_dir = "chatglm2-6b"
max_new_tokens = 96      # random weights never stop by themselves
temperature = 0.0

[head]
backend = "eat"
size = 512               # EAT renders 256 px; GFPGAN restores the face at 512

[enhance]
backend = "gfpgan"
''')
    return path


def _asr_section(out: Path) -> str:
    if not (out / "whisper-base-hf" / "tokenizer.json").is_file():
        return """[asr]
backend = "whisper"      # Whisper base (CTranslate2, float16 on CUDA); Paraformer needs its real weights
"""
    return """[asr]
backend = "whisper-hf"   # Whisper base on PyTorch, float16 on CUDA (CTranslate2's CUDA 12 build fails on CUDA 13)
whisper_hf_dir = "whisper-base-hf"
# random weights never stop by themselves: 24 tokens, about what a 10-word question takes
whisper_hf_max_new_tokens = 24
"""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(args.shared / "tools"))
    write_eat(out / "eat")
    write_gfpgan(out / "gfpgan" / "GFPGANv1.4.pth", args.shared)
    write_chatglm2(out / "chatglm2-6b", args.shared, args.chat_layers)
    write_whisper(out / "whisper-base-hf", args.whisper_tokenizer)
    print(write_config(out, args.device))


if __name__ == "__main__":
    main()
