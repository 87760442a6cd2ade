"""Piper (VITS) with reproducible noise: the same text gives the same speech.

A VITS voice samples two noises while it speaks (the stochastic durations and the prior of the flow) with ONNX
RandomNormalLike nodes, which onnxruntime seeds once per session from the clock: each call of the same sentence
sounds a little different (other durations, 'sea' heard as 'seat' in 9 of 15 tries). Here each RandomNormalLike
node becomes a graph input sliced to the shape it had, and the noise is drawn from a generator seeded by the
phoneme ids: the distribution is the voice's own (standard normal, scaled by the voice's noise_scale / noise_w), but
it is a function of the text.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

NOISE_PREFIX = "avatar_noise_"
FRAMES_PER_ID = 16  # bound on mel frames per phoneme id (measured: 2.1-3.8); a longer stream is retried
MAX_CHANNELS = 256  # bound on the channels of a noise tensor (VITS: 2 for durations, 192 for the prior)


def seeded_model(model_path: Path) -> tuple[bytes, list[str]]:
    """The voice's ONNX graph with every RandomNormalLike(x) replaced by Reshape(Slice(input, 0, numel(x)), shape(x))."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph, names = model.graph, []
    nodes = list(graph.node)
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            continue
        name, out, like = f"{NOISE_PREFIX}{len(names)}", node.output[0], node.input[0]
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_length"]))
        replacement = [
            helper.make_node("Shape", [like], [f"{name}/shape"]),
            helper.make_node("ReduceProd", [f"{name}/shape"], [f"{name}/numel"], keepdims=1),
            helper.make_node("Constant", [], [f"{name}/zero"],
                             value=helper.make_tensor(f"{name}/zero_value", TensorProto.INT64, [1], [0])),
            helper.make_node("Slice", [name, f"{name}/zero", f"{name}/numel"], [f"{name}/flat"]),
            helper.make_node("Reshape", [f"{name}/flat", f"{name}/shape"], [out]),
        ]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(at + offset, new)
    return model.SerializeToString(), names


class SeededSession:
    """An onnxruntime session of `seeded_model` that feeds the noise inputs itself; PiperVoice calls run() as usual."""

    def __init__(self, session, noise_inputs: list[str]) -> None:
        self._session, self._noise_inputs = session, noise_inputs

    def __getattr__(self, name: str):  # get_inputs() etc.: the wrapped session's
        return getattr(self._session, name)

    def run(self, output_names, feeds: dict, run_options=None):
        ids = np.ascontiguousarray(feeds["input"], dtype=np.int64)
        length_scale = float(feeds["scales"][1]) if "scales" in feeds else 1.0
        numel = MAX_CHANNELS * ids.size * int(np.ceil(FRAMES_PER_ID * max(1.0, length_scale)))
        try:
            return self._session.run(output_names, {**feeds, **self._noise(ids, numel)}, run_options)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes; a longer stream is the fix
            if "Reshape" not in str(e) and "reshape" not in str(e):
                raise
            return self._session.run(output_names, {**feeds, **self._noise(ids, 16 * numel)}, run_options)

    def _noise(self, ids: np.ndarray, numel: int) -> dict[str, np.ndarray]:
        """One stream per input, seeded by the phoneme ids; a longer stream starts with the same values."""
        seed = zlib.crc32(ids.tobytes())
        return {name: np.random.default_rng([seed, k]).standard_normal(numel, dtype=np.float32)
                for k, name in enumerate(self._noise_inputs)}
