"""Read the key/value metadata of a GGUF file (header only; no weights, no llama.cpp context).

Used to learn a model's trained context length, RoPE values and chat template before loading it.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian, version 2 and 3).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    pass


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise GGUFError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _read_string(fh: BinaryIO) -> str:
    length = _read(fh, "<Q")
    return fh.read(length).decode("utf-8", errors="replace")


class _Skipped(int):
    """An array that was not kept: only its length."""


def _read_value(fh: BinaryIO, vtype: int, keep_arrays: bool) -> Any:
    if vtype in _SCALARS:
        return _read(fh, _SCALARS[vtype])
    if vtype == _STRING:
        return _read_string(fh)
    if vtype == _ARRAY:
        item_type, count = _read(fh, "<I"), _read(fh, "<Q")
        if not keep_arrays and item_type in _SCALARS:  # skip big arrays (token scores …) quickly
            fh.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
            return _Skipped(count)
        if not keep_arrays and item_type == _STRING:
            for _ in range(count):
                fh.seek(_read(fh, "<Q"), 1)
            return _Skipped(count)
        return [_read_value(fh, item_type, keep_arrays) for _ in range(count)]
    raise GGUFError(f"unknown GGUF value type {vtype}")


def read_metadata(path: str | Path, *, keep_arrays: bool = False) -> dict[str, Any]:
    """All scalar and string metadata of a GGUF file. Arrays such as the vocabulary are skipped unless
    ``keep_arrays``; their lengths are kept under ``KEY#count`` (the vocabulary size is one)."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        version = _read(fh, "<I")
        if version < 2:
            raise GGUFError(f"GGUF version {version} is not supported")
        _read(fh, "<Q")  # tensor count
        kv_count = _read(fh, "<Q")
        out: dict[str, Any] = {"GGUF.version": version}
        for _ in range(kv_count):
            key = _read_string(fh)
            value = _read_value(fh, _read(fh, "<I"), keep_arrays)
            if isinstance(value, _Skipped):
                out[f"{key}#count"] = int(value)
            else:
                out[key] = value
        return out
