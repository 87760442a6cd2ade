"""GFPGAN through a TensorRT engine (built from the ONNX by scripts/build_gfpgan_tensorrt.py).

Same call signature as the torch module: (B,3,S,S) CUDA tensor in [-1,1] -> (B,3,S,S) CUDA tensor. Torch tensors are
the I/O buffers and the current torch CUDA stream runs the engine, so no pycuda is needed. `tensorrt` is imported
only when an engine is built or loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

INPUT_NAME, OUTPUT_NAME = "input", "output"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError("the TensorRT engine needs the 'tensorrt' Python package (pip install tensorrt, "
                          "matching your CUDA) and an NVIDIA GPU") from e
    return tensorrt


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


def build_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = True, max_batch: int = 32,
                 opt_batch: int = 8, out_size: int = 512, workspace_gib: float = 8.0) -> Path:
    """Parses the ONNX (dynamic batch) and writes a serialized engine with one profile [1, opt, max]."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # implicit in TensorRT >= 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = (3, out_size, out_size)
    profile.set_shape(INPUT_NAME, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError("TensorRT engine build failed (see the log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(blob))
    return engine_path


class GFPGANTensorRT:
    """A deserialized engine and one execution context; call it like the torch module."""

    def __init__(self, path: str | Path, device: str = "cuda"):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT engine needs a CUDA GPU")
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path} is not a TensorRT engine for this GPU / TensorRT version")
        self.context = self.engine.create_execution_context()
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(INPUT_NAME))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(OUTPUT_NAME))
        self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])

    def __call__(self, x: Tensor) -> Tensor:
        outs = [self._run(chunk) for chunk in x.split(self.max_batch)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run(self, x: Tensor) -> Tensor:
        x = x.to(self.device, self.input_dtype).contiguous()
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=self.output_dtype,
                          device=self.device)
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out
