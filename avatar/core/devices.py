"""Config device and dtype names ("auto", "cuda:1", "bfloat16") -> what torch needs, in one place."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from .errors import AvatarError

DTYPE_NAMES = ("float32", "float16", "bfloat16")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_device(device: str | None) -> str:
    """'auto' (or empty) -> 'cuda' when a GPU is usable, else 'cpu'; any other name is returned as given."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    _check_cuda_index(name)
    return name


def _check_cuda_index(name: str) -> None:
    """'cuda:N' beyond the GPUs this machine has -> a sentence (torch would fail later with a traceback)."""
    kind, _, index = name.partition(":")
    if kind != "cuda" or not index or not cuda_available():
        return  # plain 'cuda' / no GPU: the stages fall back to the CPU with a warning
    import torch

    count = torch.cuda.device_count()
    if not index.isdigit() or int(index) >= count:
        raise AvatarError(f"there is no GPU {name!r} on this machine; it has {count} (cuda:0 to cuda:{count - 1})")


def resolve_dtype(dtype: str | None, device, gpu_default: str = "bfloat16"):
    """'auto' -> float32 on CPU, `gpu_default` on CUDA (float16 where the GPU lacks bfloat16); else the named dtype.

    device: a name ("cuda:0") or a torch.device.
    """
    import torch

    name = (dtype or "auto").strip().lower()
    if name == "auto":
        if not str(device).startswith("cuda"):
            return torch.float32
        if gpu_default == "bfloat16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return torch.float16
        name = gpu_default
    if name not in DTYPE_NAMES:
        raise AvatarError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


@contextmanager
def fp32_precision(knobs: list[Any], mode: str | None) -> Iterator[None]:
    """Sets torch.backends knobs' fp32_precision ("ieee" or "tf32": torch.backends.cuda.matmul, .cudnn.conv,
    .cudnn.rnn) inside the block; their previous values come back after it. mode None: leaves them alone."""
    if mode is None:
        yield
        return
    old = [k.fp32_precision for k in knobs]
    for k in knobs:
        k.fp32_precision = mode
    try:
        yield
    finally:
        for k, v in zip(knobs, old):
            k.fp32_precision = v
