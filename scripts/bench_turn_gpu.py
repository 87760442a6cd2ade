#!/usr/bin/env python3
"""First-chunk latency of a spoken turn on one GPU with the original design's networks (issue 18, GPU goal):
end of the user's speech -> first video frame out, as the sum of the critical path of a pipelined turn:

  asr          the product's whisper-hf backend (avatar/asr/whisper_hf.py) on a Whisper-base-size folder with
               seeded weights, fp16 on the GPU: log-mel, language detection, greedy decoding of the question's tokens
  chat         ChatGLM2-6B fp16: prefill of persona + question, then decode to the end of the first clause
               (static KV cache + CUDA graph, as avatar/chat/chatglm2.py runs it)
  tts          a VITS voice (MMS-TTS size) speaking the first clause
  head         EAT: DeepSpeech v0.1.0 features of the clause (the PyTorch port, float32 on the GPU, as the engine
               runs it there), audio-to-keypoints for the clause's frames, then the generator's first batch of frames
  enhance      MODNet matte + GFPGAN v1.4 512 px of that first batch
  encode       the first batch encoded (OpenCV's MPEG-4 writer on the host)

Every stage runs on the GPU machine with random or seeded weights of the real sizes (no checkpoint can be fetched
there; their timing does not depend on the values, except that random weights never end a sentence: the token
counts are fixed by the options). Not timed there, named in the output: the real voices (a VITS voice of MMS-TTS
size stands in for GPT-SoVITS). Each turn is timed `--turns` times after warm-up; p50 and p95 per stage and of the
sum are printed as one JSON.

    python scripts/bench_turn_gpu.py --turns 20 --whisper-tokenizer tokenizer.json
        # needs torch, transformers, python_speech_features, ../shared (seeded EAT) and Whisper's tokenizer.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

FPS = 25


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--question-s", type=float, default=3.0, help="length of the spoken question")
    p.add_argument("--question-tokens", type=int, default=12, help="tokens Whisper decodes for it")
    p.add_argument("--prompt-tokens", type=int, default=80, help="persona + history + question for the chat model")
    p.add_argument("--clause-tokens", type=int, default=8, help="tokens up to the first clause boundary")
    p.add_argument("--clause-s", type=float, default=1.5, help="speech length of the first clause")
    p.add_argument("--first-frames", type=int, default=8, help="frames in the first batch sent out")
    p.add_argument("--shared", type=Path, default=None)
    p.add_argument("--whisper-tokenizer", type=Path, default=None,
                   help="Whisper's tokenizer.json (default: the packaged Whisper base's, if installed)")
    p.add_argument("--seeded", type=Path, default=Path("/tmp/seeded"), help="where the seeded Whisper folder goes")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the EAT generator, MODNet and GFPGAN (fixed batch), as a GPU server runs")
    p.add_argument("--compile-keypoints", action="store_true", help="torch.compile EAT's audio2kp too")
    return p.parse_args()


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- stages
class Asr:
    """The product's whisper-hf backend on a Whisper-base-size folder with seeded weights, fp16 on the GPU: the
    question's log-mel, language detection and --question-tokens greedy tokens (random weights never stop)."""

    name = "whisper-hf (avatar/asr/whisper_hf.py), Whisper base size, seeded weights, fp16, cuda"

    def __init__(self, args):
        from make_seeded_weights import write_whisper

        from avatar.asr.whisper_hf import WhisperHfBackend

        folder = args.seeded / "whisper-base-hf"
        if not write_whisper(folder, args.whisper_tokenizer):
            raise SystemExit("no Whisper tokenizer.json: pass --whisper-tokenizer PATH")
        self.backend = WhisperHfBackend.load(folder, "cuda", max_new_tokens=args.question_tokens)
        self.audio = np.random.default_rng(0).standard_normal(int(args.question_s * 16000)).astype(np.float32) * 0.1

    def __call__(self):
        self.backend.transcribe(self.audio, None)


class Chat:
    """ChatGLM2-6B fp16, random weights: prefill, then the first clause through the captured decode graph."""

    name = "ChatGLM2-6B (models/chatglm2.py, random weights), fp16, static KV cache + CUDA graph"

    def __init__(self, args):
        from bench_chatglm2 import build_model
        from models.chatglm2 import ChatGLM2Config, CudaGraphDecoder

        self.model = build_model(ChatGLM2Config(), torch.device("cuda"), torch.float16)
        self.cache = self.model.allocate_cache(1, 1024)
        self.decoder = CudaGraphDecoder(self.model, self.cache)
        self.prompt = torch.randint(100, 60000, (1, args.prompt_tokens), device="cuda")
        self.clause = args.clause_tokens

    @torch.inference_mode()
    def __call__(self):
        n = self.prompt.shape[1]
        token = self.model(self.prompt, torch.arange(n, device="cuda"), self.cache, last_only=True)[:, -1].argmax(-1)
        int(token.item())  # streamed to the splitter token by token
        for i in range(self.clause - 1):
            token = self.decoder(token.view(1, 1), torch.tensor([n + i], device="cuda"), self.cache)[:, -1].argmax(-1)
            int(token.item())


class Tts:
    """A VITS voice of MMS-TTS size (transformers, random weights), fp32 on the GPU: text encoder and duration
    predictor on the clause's symbols, then flow + HiFi-GAN decoder on exactly --clause-s of latent frames (random
    weights predict arbitrary durations, so the length is fixed here instead of read from them)."""

    name = "VITS, MMS-TTS size (transformers VitsModel parts, random weights), fp32, cuda"

    def __init__(self, args):
        from transformers import VitsConfig, VitsModel

        cfg = VitsConfig()
        self.model = VitsModel(cfg).to("cuda").eval()
        self.ids = torch.randint(1, 30, (1, 24), device="cuda")
        self.frames = int(args.clause_s * cfg.sampling_rate / 256)  # HiFi-GAN upsamples 256x
        self.flow_size = cfg.flow_size

    @torch.inference_mode()
    def __call__(self):
        m = self.model
        mask = torch.ones(1, self.ids.shape[1], 1, device="cuda")
        out = m.text_encoder(input_ids=self.ids, padding_mask=mask)
        hidden = out.last_hidden_state.transpose(1, 2)
        m.duration_predictor(hidden, mask.transpose(1, 2), None, reverse=True, noise_scale=0.8)
        z = torch.randn(1, self.flow_size, self.frames, device="cuda") * 0.667
        z = m.flow(z, torch.ones(1, 1, self.frames, device="cuda"), None, reverse=True)
        return m.decoder(z).float().cpu()


class Head:
    """EAT (seeded official-layout weights), bf16 generator: keypoints for the clause, then the first batch."""

    name = "DeepSpeech v0.1.0 size (PyTorch port, random weights) fp32 + EAT (seeded weights), generator bf16 channels_last"

    def __init__(self, args):
        from bench_eat import build_networks, clip_inputs, find_shared, prepare_clip

        from avatar.head.eat.deepspeech_torch import TorchDeepSpeech
        from avatar.head.eat.runtime import EatRenderer, window_chunk
        from tests.head.deepspeech_graphs import random_constants

        # the official graph's constants at real size (random), through the loader the engine uses
        self.deepspeech = TorchDeepSpeech.from_constants(random_constants(2048, seed=0), "cuda")
        self.speech = np.random.default_rng(1).standard_normal(int(args.clause_s * 16000)).astype(np.float32) * 0.1

        nets = build_networks(find_shared(args.shared), "cuda", torch.bfloat16)
        self.renderer = EatRenderer(nets, batch_size=args.first_frames, a2kp_batch=32, channels_last=True,
                                    compile=args.compile, compile_keypoints=args.compile_keypoints,
                                    freezing=getattr(args, "freezing", False))
        self.n = int(round(args.clause_s * FPS))
        source, self.he, self.inputs = clip_inputs(nets, self.n)
        self.state = prepare_clip(self.renderer, source)  # once per portrait, at start-up: not in the turn
        self.window = window_chunk

    @torch.inference_mode()
    def __call__(self):
        self.deepspeech.windows(self.speech)  # what the keypoints read (here the clip's stored windows stand in)
        kp = self.renderer.driving_keypoints(self.state, self.he, self.n,
                                             lambda a, b: self.window(self.inputs, a, b))
        return next(iter(self.renderer.frame_batches(self.state, kp)))


class Enhance:
    """MODNet matte + GFPGAN v1.4 at 512 px, fp16 channels_last, the first batch."""

    name = "MODNet + GFPGAN v1.4 512 px (seeded), fp16 channels_last"

    def __init__(self, args):
        from bench_enhance import gfpgan_net

        from avatar.core.compiled import compiled
        from avatar.enhance.gfpgan import TorchRunner
        from models.gfpgan import V1_4
        from models.modnet import MODNet

        net, self.weights = gfpgan_net(V1_4)
        self.gfpgan = TorchRunner(net, "cuda", torch.float16, args.first_frames, compile=args.compile)
        self.gfpgan.warm_up()
        modnet = MODNet().eval().to("cuda", torch.float16).to(memory_format=torch.channels_last).pad_concatenations(8)
        self.modnet = compiled(modnet, dynamic=False) if args.compile else modnet  # as the app's (thread-safe)

    @torch.inference_mode()
    def on_gpu(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B,256,256,3) frames (host or GPU) -> matted, enhanced uint8 (B,512,512,3) frames left on the GPU."""
        frames = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
        n = frames.shape[0]
        if n < self.gfpgan.batch_size:  # one shape for the compiled MODNet too (GFPGAN's runner pads its own)
            frames = torch.cat([frames, frames[-1:].expand(self.gfpgan.batch_size - n, -1, -1, -1)])
        x = frames.to("cuda").permute(0, 3, 1, 2).to(torch.float16) / 127.5 - 1
        x = torch.nn.functional.interpolate(x, size=(512, 512), mode="bilinear").contiguous(
            memory_format=torch.channels_last)
        alpha = self.modnet(x)[:n]
        out = self.gfpgan(x)[:n] * alpha + (1 - alpha)
        return ((out.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.on_gpu(frames).cpu().numpy()


def encode(frames: np.ndarray, path: Path) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, frames.shape[2:0:-1])
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


# ---------------------------------------------------------------- the turn
def one_turn(stages: dict, out: Path) -> dict[str, float]:
    t = {}
    t["asr"] = timed(stages["asr"])
    t["chat"] = timed(stages["chat"])
    t["tts"] = timed(stages["tts"])
    frames = {}
    t["head"] = timed(lambda: frames.update(raw=stages["head"]()))
    t["enhance"] = timed(lambda: frames.update(out=stages["enhance"](frames["raw"])))
    t["encode"] = timed(lambda: encode(frames["out"], out))
    t["first_frame"] = sum(t.values())
    t["first_audio"] = t["asr"] + t["chat"] + t["tts"]
    return t


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    stages = {"asr": Asr(args), "chat": Chat(args), "tts": Tts(args), "head": Head(args), "enhance": Enhance(args)}
    build_s = time.perf_counter() - t0
    out = Path("/tmp/first_chunk.mp4")
    for _ in range(3):  # warm-up: cuDNN choice, compiled graphs, CUDA graph capture
        one_turn(stages, out)
    turns = [one_turn(stages, out) for _ in range(args.turns)]
    result = {"bench": "turn_gpu", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "turns": args.turns, "build_s": round(build_s, 1),
              "stages": {k: v.name for k, v in stages.items()} | {"encode": "OpenCV MPEG-4 (mp4v), host"},
              "not_timed": ["the chat tokenizer and the text splitter (CPU, < 1 ms)"],
              "setting": {k: getattr(args, k) for k in ("question_s", "question_tokens", "prompt_tokens",
                                                       "clause_tokens", "clause_s", "first_frames", "compile")}}
    for key in turns[0]:
        values = [t[key] for t in turns]
        result[key] = {"p50_s": round(statistics.median(values), 4), "p95_s": round(percentile(values, 95), 4)}
    result["goal_met"] = result["first_frame"]["p50_s"] <= 0.5 and result["first_frame"]["p95_s"] <= 0.8
    print(json.dumps(result))


if __name__ == "__main__":
    main()
