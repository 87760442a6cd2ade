"""The embedded ASR is right on both speech fixtures under every CPU kernel set CTranslate2 can pick on this machine.

CTranslate2 picks its kernels by the processor, so a result that is right on one CPU can be wrong on another (int8
Whisper wrote 运营识别 for 语音识别 on an AMD machine). scripts/asr_isa_matrix.py runs the stage in one subprocess per
kernel environment (instruction set GENERIC/AVX/AVX2/AVX512 x MKL/oneDNN, capped as a machine with only that set
would be); this test fails when any of them misses a character or word, on any machine, not only on the machines that pick that kernel.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "asr_isa_matrix.py"


def _matrix(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=1200)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows and "summary" in rows[-1], proc.stderr[-2000:]
    return rows[:-1]


def test_environments_follow_the_cpu_flags():
    sys.path.insert(0, str(SCRIPT.parent))
    from cpu_kernels import environments

    assert [e["CT2_FORCE_CPU_ISA"] for e in environments(set())] == ["GENERIC", "GENERIC"]
    avx2 = environments({"avx", "avx2", "fma"})
    assert {e["CT2_FORCE_CPU_ISA"] for e in avx2} == {"GENERIC", "AVX", "AVX2"}
    assert all(e["ONEDNN_MAX_CPU_ISA"] != "AVX2_VNNI" for e in avx2)  # no VNNI flag: not forced
    assert any(e["ONEDNN_MAX_CPU_ISA"] == "AVX2_VNNI" for e in environments({"avx", "avx2", "fma", "avx_vnni"}))


def test_both_fixtures_exact_on_every_kernel_set(shared_dir):
    rows = _matrix()
    for row in rows:
        env = " ".join(f"{k}={v}" for k, v in row["env"].items())
        assert "error" not in row, f"{env}: {row['error']}"
        for name, clip in row["clips"].items():
            print(f"{env}: {name} error rate {clip['error_rate']:.1%} (limit {clip['limit']:.0%}, "
                  f"margin {clip['margin']:.1%}), rtf {clip['rtf']}: {clip['text']}")
    failures = [(row["env"], name, clip["text"]) for row in rows for name, clip in row["clips"].items()
                if not clip["exact"]]
    assert not failures, failures
    assert len({row["env"]["CT2_FORCE_CPU_ISA"] for row in rows}) >= 2  # every x86-64 CPU has at least AVX

