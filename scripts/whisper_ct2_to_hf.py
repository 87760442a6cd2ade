#!/usr/bin/env python3
"""Converts a CTranslate2 Whisper folder (by default the packaged Whisper base) back to Hugging Face format, offline,
for [asr] backend = "whisper-hf": config.json, model.safetensors (the same float16 values) and tokenizer.json.

CTranslate2's converter fuses the attention projections (self-attention q|k|v in one matrix, cross-attention k|v)
and gives k a zero bias (Whisper's k has none); this splits them again and checks that those biases are zero.

    python scripts/whisper_ct2_to_hf.py weights/whisper-base-hf      # then [asr] whisper_hf_dir = "whisper-base-hf"
    python scripts/whisper_ct2_to_hf.py OUT --ct2-dir path/to/ct2-whisper
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # CTranslate2's DataType enum, in order
HF_IDS = {"bos_token_id": 50257, "eos_token_id": 50257, "pad_token_id": 50257, "decoder_start_token_id": 50258}
NORM = {"gamma": "weight", "beta": "bias"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the Hugging Face folder to write")
    p.add_argument("--ct2-dir", type=Path, default=None, help="a CTranslate2 Whisper folder (default: packaged base)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- reading model.bin
class _Reader:
    def __init__(self, f) -> None:
        self.f = f

    def number(self, fmt: str) -> int:
        return struct.unpack(fmt, self.f.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.f.read(self.number("H"))[:-1].decode("utf-8")  # length counts the trailing NUL

    def variable(self) -> tuple[str, np.ndarray | None]:
        name = self.string()
        rank = self.number("B")
        dims = struct.unpack(f"{rank}I", self.f.read(4 * rank))
        dtype = CT2_DTYPES[self.number("B")]
        data = self.f.read(self.number("I"))
        if dtype == "bfloat16":  # numpy has none
            raise ValueError(f"{name} is bfloat16: convert a float16 or float32 CTranslate2 model")
        return name, np.frombuffer(data, dtype=dtype).reshape(dims)


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (binary version 6) by name; aliases are left out."""
    with open(path, "rb") as f:
        r = _Reader(f)
        version = r.number("I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version}; this reader knows version 6")
        r.string(), r.number("I")  # the spec's name and revision
        variables = dict(r.variable() for _ in range(r.number("I")))
    scaled = [name for name in variables if name.endswith("_scale")]
    if scaled:  # int8 / int16 weights with separate scales: copied as they are, they would be nonsense
        raise ValueError(f"{path}: a quantized model ({scaled[0]}, ...); convert a float16 or float32 one")
    return variables


# ---------------------------------------------------------------- renaming
def _split(weight: np.ndarray, bias: np.ndarray, names: tuple[str, ...], prefix: str) -> dict[str, np.ndarray]:
    """A fused projection -> one per name; "k" has no bias in Whisper (CTranslate2 stored zeros: checked)."""
    out = {}
    for name, w, b in zip(names, np.split(weight, len(names)), np.split(bias, len(names))):
        out[f"{prefix}.{name}_proj.weight"] = w
        if name == "k":
            if np.any(b):
                raise ValueError(f"{prefix}: the k projection has a non-zero bias; not a Whisper model")
        else:
            out[f"{prefix}.{name}_proj.bias"] = b
    return out


def _linear(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": v[f"{src}/weight"], f"{dst}.bias": v[f"{src}/bias"]}


def _norm(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.{NORM[k]}": v[f"{src}/{k}"] for k in NORM}


def _layer(v: dict, side: str, i: int) -> dict[str, np.ndarray]:
    src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    out = _split(v[f"{src}/self_attention/linear_0/weight"], v[f"{src}/self_attention/linear_0/bias"],
                 ("q", "k", "v"), f"{dst}.self_attn")
    out |= _linear(v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
    out |= _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    out |= _linear(v, f"{src}/ffn/linear_0", f"{dst}.fc1") | _linear(v, f"{src}/ffn/linear_1", f"{dst}.fc2")
    out |= _norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    if side == "decoder":
        out |= _linear(v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        out |= _split(v[f"{src}/attention/linear_1/weight"], v[f"{src}/attention/linear_1/bias"], ("k", "v"),
                      f"{dst}.encoder_attn")
        out |= _linear(v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        out |= _norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    return out


def layers(v: dict, side: str) -> int:
    return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})


def to_hf(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """WhisperForConditionalGeneration's state dict (proj_out is tied to the decoder's embeddings: left out)."""
    state = {"model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"]}
    for side in ("encoder", "decoder"):
        state[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        state |= _norm(v, f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(layers(v, side)):
            state |= _layer(v, side, i)
    for conv in ("conv1", "conv2"):
        state |= _linear(v, f"encoder/{conv}", f"model.encoder.{conv}")
    return state


def hf_config(v: dict[str, np.ndarray], ct2_config: dict) -> dict:
    """WhisperConfig fields read off the tensors' shapes, and the suppressed ids of CTranslate2's config.json."""
    vocab, d_model = v["decoder/embeddings/weight"].shape
    return {"d_model": int(d_model), "vocab_size": int(vocab),
            "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
            "encoder_layers": layers(v, "encoder"), "decoder_layers": layers(v, "decoder"),
            "encoder_attention_heads": int(v["encoder/num_heads"]), "decoder_attention_heads": int(v["decoder/num_heads"]),
            "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
            "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
            "suppress_tokens": ct2_config.get("suppress_ids"),
            "begin_suppress_tokens": ct2_config.get("suppress_ids_begin"), **HF_IDS}


# ---------------------------------------------------------------- writing
def convert(ct2_dir: Path, out: Path) -> Path:
    """Writes out/ (config.json, model.safetensors, tokenizer.json) from a CTranslate2 Whisper folder."""
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig

    variables = read_ct2(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    WhisperConfig(**hf_config(variables, ct2_config)).to_json_file(str(out / "config.json"))
    save_file({k: torch.from_numpy(np.array(a)) for k, a in to_hf(variables).items()},
              str(out / "model.safetensors"))
    shutil.copyfile(ct2_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.ct2_dir is None:
        from avatar.asr.whisper import prepare_whisper_base

        args.ct2_dir = prepare_whisper_base()
    print(convert(args.ct2_dir, args.out))


if __name__ == "__main__":
    main()
