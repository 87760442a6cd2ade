"""Float32 constants of a TensorFlow frozen graph (a serialized GraphDef, .pb) read without TensorFlow.

A frozen graph keeps each trained variable as a Const node whose attr "value" holds a TensorProto. Only the few
protobuf fields on that path are decoded (message numbers from tensorflow/core/framework/*.proto):

    GraphDef.node = 1 (NodeDef)   NodeDef: name = 1, op = 2, attr = 5 (map entry: key = 1, value = 2 AttrValue)
    AttrValue.tensor = 8          TensorProto: dtype = 1, tensor_shape = 2, tensor_content = 4, float_val = 5
    TensorShapeProto.dim = 2      Dim: size = 1

Everything else is skipped by its wire type. Tensors are numpy views into the file's bytes (no copy).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avatar.core.errors import WeightsError

DT_FLOAT = 1  # tensorflow DataType enum
VARINT, FIXED64, DELIMITED, FIXED32 = 0, 1, 2, 5  # protobuf wire types


class _Malformed(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed(f"truncated varint at byte {pos}")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): an int for varints, a memoryview of the payload otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield field, wire, value
            continue
        if wire == DELIMITED:
            size, pos = _varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise _Malformed(f"unsupported wire type {wire} at byte {pos}")
        if pos + size > len(buf):
            raise _Malformed(f"field {field} runs past the end ({pos + size} > {len(buf)})")
        yield field, wire, buf[pos:pos + size]
        pos += size


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims = []
    for field, _, dim in _fields(buf):
        if field == 2:
            size = next((v for f, w, v in _fields(dim) if f == 1 and w == VARINT), 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)
    return tuple(dims)


def _tensor(buf: memoryview, name: str) -> np.ndarray:
    """TensorProto -> float32 array of its shape (float_val shorter than the shape repeats its last value, as TF)."""
    dtype, shape, content, values = None, (), None, []
    for field, wire, value in _fields(buf):
        if field == 1:
            dtype = value
        elif field == 2:
            shape = _shape(value)
        elif field == 4:
            content = value
        elif field == 5:
            values.append(np.frombuffer(value, "<f4"))
    if dtype != DT_FLOAT:
        raise WeightsError(f"constant {name!r} has TensorFlow dtype {dtype}, expected float32 ({DT_FLOAT})")
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None:
        flat = np.frombuffer(content, "<f4")
    else:
        flat = np.concatenate(values) if values else np.zeros(1, np.float32)
        flat = np.concatenate([flat, np.full(max(0, count - len(flat)), flat[-1], np.float32)])
    if len(flat) != count:
        raise WeightsError(f"constant {name!r} holds {len(flat)} values for its shape {shape}")
    return flat.reshape(shape)


def _const_value(node: memoryview, wanted: set[str]) -> tuple[str, memoryview] | None:
    """NodeDef -> (name, TensorProto bytes) for a wanted Const, else None."""
    name, op, tensor = None, None, None
    for field, wire, value in _fields(node):
        if field == 1 and wire == DELIMITED:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 2 and wire == DELIMITED:
            op = bytes(value)
        elif field == 5 and wire == DELIMITED:
            entry = {f: v for f, _, v in _fields(value)}
            if bytes(entry.get(1, b"")) == b"value" and 2 in entry:
                tensor = next((v for f, _, v in _fields(entry[2]) if f == 8), None)
    if op == b"Const" and name in wanted and tensor is not None:
        return name, tensor
    return None


def read_constants(path: str | Path, names: set[str] | list[str]) -> dict[str, np.ndarray]:
    """The Const nodes called `names` in frozen graph `path` -> {name: float32 array}; absent names are left out.

    Raises WeightsError when the file is not a GraphDef or a wanted constant is not float32.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"DeepSpeech graph not found: {p}")
    buf, wanted, found = memoryview(p.read_bytes()), set(names), {}
    try:
        for field, wire, node in _fields(buf):
            if field == 1 and wire == DELIMITED and (hit := _const_value(node, wanted)) is not None:
                found[hit[0]] = _tensor(hit[1], hit[0])
    except _Malformed as e:
        raise WeightsError(f"{p.name} is not a TensorFlow frozen graph ({e})") from None
    return found
