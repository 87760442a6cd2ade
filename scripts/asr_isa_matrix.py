"""Runs the embedded Whisper ASR on the speech fixtures under every CPU kernel set CTranslate2 can pick here.

CTranslate2 chooses its kernels by the processor: an instruction set (CT2_FORCE_CPU_ISA: GENERIC, AVX, AVX2,
AVX512) and a GEMM library (Intel MKL on Intel CPUs, oneDNN elsewhere: CT2_USE_MKL), and MKL and oneDNN dispatch
again by themselves. Each environment (scripts/cpu_kernels.py) caps all of them at one level, as a machine with only
that instruction set would, and runs in its own process (the choice is made once per process). An instruction set
this CPU lacks is skipped (forcing it would crash).

    python scripts/asr_isa_matrix.py                          # the product's settings, JSON lines + a summary
    python scripts/asr_isa_matrix.py --compute-type int8 --beam 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cpu_kernels import cpu_flags, environments

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "fixtures" / "speech"
# file: (reference transcript, language, error-rate limit of the other ASR tests); here every clip must be exact
# (error rate 0 after the normalisation of text.py: case, punctuation, spaces)
FIXTURES = {
    "asr_example_zh.wav": ("欢迎大家来体验达摩院推出的语音识别模型", "zh", 0.10),
    "jfk.flac": ("And so my fellow Americans, ask not what your country can do for you, "
                 "ask what you can do for your country.", "en", 0.10),
}
def run_one(compute_type: str | None, beam: int | None) -> dict:
    """In this process: load the stage as the app does and transcribe each fixture (language auto)."""
    sys.path.insert(0, str(ROOT))
    import avatar.asr.whisper as whisper
    from avatar.asr import Asr
    from avatar.core import media
    from avatar.core.config import AvatarConfig
    from avatar.core.text import char_error_rate, word_error_rate

    if beam:
        whisper.WHISPER_BEAM_SIZE = beam
    cfg = AvatarConfig(weights_dir=str(ROOT / ".no-weights"), device="cpu")
    if compute_type:
        cfg = cfg.replace(**{"asr.whisper_compute_type": compute_type})
    asr = Asr.load(cfg)
    out = {"compute_type": cfg.asr.whisper_compute_type, "beam": whisper.WHISPER_BEAM_SIZE, "clips": {}}
    asr.transcribe(media.load_audio(SPEECH / "jfk.flac", 16000), "en")  # warm-up: rtf is the steady state
    for name, (reference, language, limit) in FIXTURES.items():
        audio = media.load_audio(SPEECH / name, 16000)
        t0 = time.perf_counter()
        t = asr.transcribe(audio, "auto")
        seconds = time.perf_counter() - t0
        rate = (char_error_rate if language == "zh" else word_error_rate)(reference, t.text)
        out["clips"][name] = {"text": t.text, "language": t.language, "error_rate": round(rate, 4), "limit": limit,
                              "margin": round(limit - rate, 4), "exact": t.language == language and rate == 0,
                              "rtf": round(seconds / audio.duration_s, 3)}
    return out


def run_all(compute_type: str | None, beam: int | None) -> list[dict]:
    results = []
    for env in environments(cpu_flags()):
        cmd = [sys.executable, __file__, "--one"]
        cmd += ["--compute-type", compute_type] if compute_type else []
        cmd += ["--beam", str(beam)] if beam else []
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        row = {"env": env}
        if proc.returncode != 0:
            row["error"] = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        else:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        results.append(row)
    return results


def summary(results: list[dict]) -> dict:
    clips = [c for r in results for c in r.get("clips", {}).values()]
    return {"environments": len(results), "failed": sum(1 for r in results if "error" in r or
                                                          not all(c["exact"] for c in r["clips"].values())),
            "smallest_margin": min((c["margin"] for c in clips), default=None),
            "worst_rtf": max((c["rtf"] for c in clips), default=None)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compute-type", help="CTranslate2 compute type (default: the config's)")
    ap.add_argument("--beam", type=int, help="beam size (default: the stage's)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one environment, in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.compute_type, args.beam), ensure_ascii=False))
        return 0
    results = run_all(args.compute_type, args.beam)
    for row in results:
        print(json.dumps(row, ensure_ascii=False))
    total = summary(results)
    print(json.dumps({"summary": total}))
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
