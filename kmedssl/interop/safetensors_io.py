"""``.safetensors`` files read and written with NumPy alone (no pickle, no ``safetensors`` package needed).

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian ``N``, then ``N`` bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the raw
little-endian tensor bytes, ``data_offsets`` counted from the end of the header. Every header field is checked
before a byte of data is interpreted, so a damaged or hostile file gets a one-line ``InteropError`` naming it.
BF16 tensors (NumPy has no bfloat16) are read as float32, exactly.
"""

import json
import math
import os
import pathlib

import numpy as np

from kmedssl.interop.state_dicts import InteropError

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
BF16 = "BF16"
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit


def _item_size(dtype_name):
    return 2 if dtype_name == BF16 else DTYPES[dtype_name].itemsize


def read_header(path):
    """``(header, data_start)`` of a ``.safetensors`` file, every entry checked against the file size.

    Raises:
        InteropError: one line naming ``path`` and what is wrong.
    """
    path = pathlib.Path(path)
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise InteropError(f"{path}: not a .safetensors file (shorter than its 8-byte header length)")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise InteropError(f"{path}: not a .safetensors file (header of {length} bytes in a {size}-byte file)")
        try:
            header = json.loads(file.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InteropError(f"{path}: not a .safetensors file (header is not JSON: {error})") from None
    if not isinstance(header, dict):
        raise InteropError(f"{path}: not a .safetensors file (header is not a JSON object)")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(entry, data_size)
        if problem:
            raise InteropError(f"{path}: tensor {name!r}: {problem}")
    return header, 8 + length


def _entry_problem(entry, data_size):
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        return "expected an object with dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES and dtype != BF16:
        return f"unsupported dtype {dtype!r} (expected one of {sorted([*DTYPES, BF16])})"
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        return f"expected a shape of non-negative integers, received {shape!r}"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        return f"data_offsets {offsets!r} outside the file's {data_size} data bytes"
    expected = math.prod(shape) * _item_size(dtype)
    if offsets[1] - offsets[0] != expected:
        return f"{offsets[1] - offsets[0]} bytes for shape {tuple(shape)} {dtype} (expected {expected})"
    return None


def load_file(path):
    """``{name: np.ndarray}`` of a ``.safetensors`` file (BF16 -> float32); ``load_metadata`` has the rest."""
    header, start = read_header(path)
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] == BF16:  # the high half of a float32
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"]).astype(array.dtype.newbyteorder("="), copy=True)
    return tensors


def load_metadata(path):
    """The ``__metadata__`` strings of a ``.safetensors`` file (``{}`` when it has none)."""
    metadata = read_header(path)[0].get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def save_file(tensors, path, metadata=None):
    """Write ``{name: array}`` as ``.safetensors`` (tensors in name order, header padded to 8 bytes).

    ``metadata`` defaults to ``{"format": "pt"}``, which ``transformers``' ``from_pretrained`` requires.
    """
    metadata = {"format": "pt"} if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        if array.dtype.newbyteorder("<") not in NAMES:
            raise InteropError(f"{path}: tensor {name!r} has dtype {array.dtype}, which .safetensors cannot hold")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        raw = array.tobytes()
        header[name] = {"dtype": NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little"))
        file.write(encoded)
        for chunk in chunks:
            file.write(chunk)
