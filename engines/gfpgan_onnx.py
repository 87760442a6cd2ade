"""GFPGAN through ONNX Runtime: export (TorchScript exporter, opset 17, dynamic batch) and a runner with the
torch module's call signature: (B,3,S,S) float tensor in [-1,1] -> (B,3,S,S) float tensor (raw, unclamped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

INPUT_NAME, OUTPUT_NAME = "input", "output"
OPSET = 17  # the TorchScript exporter handles the net at 17; the dynamo exporter would need 18


def export_onnx(net: nn.Module, path: str | Path, out_size: int = 512, opset: int = OPSET) -> Path:
    """Writes `net` (fp32, eval) as ONNX with a dynamic batch axis. The decoder noise is the stored buffers, so the
    graph is deterministic. Builds the dummy input on the net's device."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(net.parameters()).device
    dummy = torch.zeros(1, 3, out_size, out_size, device=device)
    with torch.no_grad():
        torch.onnx.export(net.eval(), (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    return path


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("the ONNX engine needs onnxruntime (pip install onnxruntime or onnxruntime-gpu)") from e
    return onnxruntime


def available_providers() -> list[str]:
    return list(_import_onnxruntime().get_available_providers())


class GFPGANOnnx:
    """ONNX Runtime session; CUDAExecutionProvider when `device` is CUDA and the provider exists, else CPU."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0):
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ORT's default (all cores)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()
        self.device = device if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: Tensor) -> Tensor:
        """(B,3,S,S) -> (B,3,S,S) float32 on x's device."""
        feed = {INPUT_NAME: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        out = self.session.run([OUTPUT_NAME], feed)[0]
        return torch.from_numpy(out).to(x.device)
