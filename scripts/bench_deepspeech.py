#!/usr/bin/env python3
"""EAT's DeepSpeech features: the TensorFlow runner vs the PyTorch port on one graph, per clip length (JSON).

    python scripts/make_seeded_weights.py /tmp/seeded      # or the real deepspeech-0_1_0-b90017e8.pb
    python scripts/bench_deepspeech.py /tmp/seeded/eat/deepspeech-0_1_0-b90017e8.pb --durations 3 10
    python scripts/bench_deepspeech.py --random --backends torch --device cuda --dtype bfloat16   # no .pb needed

Times windows() (MFCC + network + windowing) and logits() alone (the network), best of --repeats after one
warm-up run, on JFK's speech from ../shared (repeated to the length) or noise without it (logits only where
python_speech_features is missing). Load times are printed too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
JFK = REPO.parent / "shared" / "fixtures" / "speech" / "jfk.flac"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graph", nargs="?", type=Path, help="a DeepSpeech v0.1.0 frozen graph (.pb)")
    p.add_argument("--random", action="store_true", help="random weights of the real size instead of a graph "
                                                         "(torch only)")
    p.add_argument("--backends", nargs="+", default=["tensorflow", "torch"], choices=["tensorflow", "torch"])
    p.add_argument("--durations", nargs="+", type=float, default=[3.0, 10.0], help="clip lengths in seconds")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="torch port's device")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    return p.parse_args(argv)


def speech(duration_s: float) -> np.ndarray:
    """float32 16 kHz speech of duration_s: JFK repeated, or noise where ../shared is absent."""
    n = int(duration_s * 16000)
    if not JFK.is_file():
        return (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    from avatar.core.media import load_audio

    samples = load_audio(JFK, 16000).samples
    return np.tile(samples, n // len(samples) + 1)[:n].astype(np.float32)


def load(backend: str, args: argparse.Namespace):
    if backend == "tensorflow":
        from avatar.head.eat.deepspeech import DeepSpeech

        return DeepSpeech.load(args.graph)
    import torch

    from avatar.head.eat.deepspeech_torch import TorchDeepSpeech

    dtype = getattr(torch, args.dtype)
    if args.random:
        from tests.head.deepspeech_graphs import random_constants

        return TorchDeepSpeech.from_constants(random_constants(2048, seed=7), args.device, dtype)
    return TorchDeepSpeech.load(args.graph, device=args.device, dtype=dtype)


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: TF's first session run, cuDNN's plan
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def network_inputs(clip: np.ndarray) -> np.ndarray | None:
    """(T, 494) MFCC context vectors, or None without python_speech_features (a bare GPU machine)."""
    from avatar.head.eat.deepspeech import mfcc_input_vectors, to_int16

    try:
        return mfcc_input_vectors(to_int16(clip))
    except ImportError:
        return None


def bench(backend: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    runner = load(backend, args)
    row = {"load_s": round(time.perf_counter() - t0, 2)}
    for duration_s in args.durations:
        clip = speech(duration_s)
        x = network_inputs(clip)
        times = {} if x is None else {"windows_s": round(best_of(lambda: runner.windows(clip), args.repeats), 4)}
        if x is None:  # standardised noise of the same shape: the network's cost does not depend on the values
            x = np.random.default_rng(0).standard_normal((int(round(duration_s * 50)), 494))
        times["logits_s"] = round(best_of(lambda: runner.logits(x), args.repeats), 4)
        row[f"{duration_s:g}s"] = times
    runner.close()
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.graph is None and not (args.random and args.backends == ["torch"]):
        sys.exit("give a graph, or --random with --backends torch")
    import torch

    result = {"bench": "deepspeech", "graph": str(args.graph) if args.graph else "random (2048 units)",
              "device": args.device, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
              "repeats": args.repeats}
    for backend in args.backends:
        result[backend] = bench(backend, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
