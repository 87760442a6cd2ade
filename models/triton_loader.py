"""Loading the project's Triton kernels (CUDA only; triton ships with torch's Linux CUDA builds)."""
from __future__ import annotations

import importlib

import torch


def load_cuda_kernel(module: str, name: str):
    """`name` from `module` (a models.*_triton module), or None where triton is not installed or a visible GPU is
    older than triton supports (compute capability 7.0). Call it outside torch.compile's tracing: a module imported
    while dynamo traces is not used in the graph."""
    if not all(torch.cuda.get_device_capability(i)[0] >= 7 for i in range(torch.cuda.device_count())):
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None
