"""Environment variables that make this process pick the CPU kernels of a machine with a lower instruction set.

Every library we use dispatches its kernels by the processor it finds at run time, so a result measured on an
AVX-512 Intel machine can differ on an AVX2 AMD one. Each library has its own cap:
CTranslate2 (CT2_FORCE_CPU_ISA; CT2_USE_MKL picks Intel MKL, used on Intel CPUs only, or oneDNN, used elsewhere),
MKL (MKL_ENABLE_INSTRUCTIONS), oneDNN (ONEDNN_MAX_CPU_ISA, also torch's), torch (ATEN_CPU_CAPABILITY), numpy
(NPY_DISABLE_CPU_FEATURES), OpenBLAS (OPENBLAS_CORETYPE) and OpenCV (OPENCV_CPU_DISABLE). ONNX Runtime, TFLite and
mediapipe have none: they run this CPU's own kernels.

    eval "$(python scripts/cpu_kernels.py AVX2 --onednn)"   # export an AMD-like AVX2 set, then run anything
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

ORDER = ("GENERIC", "AVX", "AVX2", "AVX512")
NEEDS = {"GENERIC": (), "AVX": ("avx",), "AVX2": ("avx2", "fma"), "AVX512": ("avx512f", "avx512bw", "avx512vl")}
MKL_CAP = {"GENERIC": "SSE4_2", "AVX": "AVX", "AVX2": "AVX2", "AVX512": "AVX512"}
ONEDNN_CAPS = {"GENERIC": ("SSE41",), "AVX": ("AVX",), "AVX2": ("AVX2", "AVX2_VNNI"),
               "AVX512": ("AVX512_CORE", "AVX512_CORE_VNNI")}
VNNI_FLAG = {"AVX2_VNNI": "avx_vnni", "AVX512_CORE_VNNI": "avx512_vnni"}
ATEN = {"GENERIC": "default", "AVX": "default", "AVX2": "avx2", "AVX512": "avx512"}
OPENBLAS = {"GENERIC": "Nehalem", "AVX": "SandyBridge", "AVX2": "Haswell", "AVX512": "SkylakeX"}
NUMPY_ABOVE = {"GENERIC": "AVX F16C FMA3 AVX2 ", "AVX": "F16C FMA3 AVX2 ", "AVX2": "", "AVX512": None}
NUMPY_AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
OPENCV_ABOVE = {"GENERIC": "AVX,FP16,AVX2,AVX512-SKX", "AVX": "FP16,AVX2,AVX512-SKX", "AVX2": "AVX512-SKX",
                "AVX512": None}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def supported(flags: set[str]) -> list[str]:
    """The levels this CPU can run (forcing a higher one would crash with an illegal instruction)."""
    return [isa for isa in ORDER if set(NEEDS[isa]) <= flags]


def level_env(isa: str, mkl: bool = True, onednn_cap: str | None = None) -> dict[str, str]:
    """Every library capped at `isa`; CTranslate2 on MKL (as on Intel) or on oneDNN (as on AMD)."""
    env = {"CT2_FORCE_CPU_ISA": isa, "CT2_USE_MKL": "1" if mkl else "0", "MKL_ENABLE_INSTRUCTIONS": MKL_CAP[isa],
           "ONEDNN_MAX_CPU_ISA": onednn_cap or ONEDNN_CAPS[isa][0], "ATEN_CPU_CAPABILITY": ATEN[isa],
           "OPENBLAS_CORETYPE": OPENBLAS[isa]}
    if NUMPY_ABOVE[isa] is not None:
        env["NPY_DISABLE_CPU_FEATURES"] = (NUMPY_ABOVE[isa] + NUMPY_AVX512).strip()
    if OPENCV_ABOVE[isa] is not None:
        env["OPENCV_CPU_DISABLE"] = OPENCV_ABOVE[isa]
    return env


def environments(flags: set[str]) -> list[dict[str, str]]:
    """Each level this CPU runs, on MKL and on oneDNN; oneDNN also with VNNI where the CPU has it."""
    envs = []
    for isa in supported(flags):
        envs.append(level_env(isa, mkl=True))
        for cap in ONEDNN_CAPS[isa]:
            if cap in VNNI_FLAG and VNNI_FLAG[cap] not in flags:
                continue
            envs.append(level_env(isa, mkl=False, onednn_cap=cap))
    return envs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("isa", choices=ORDER)
    ap.add_argument("--onednn", action="store_true", help="CTranslate2 on oneDNN, as on a non-Intel CPU")
    args = ap.parse_args()
    if args.isa not in supported(cpu_flags()):
        raise SystemExit(f"this CPU cannot run {args.isa} kernels")
    for key, value in level_env(args.isa, mkl=not args.onednn).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
