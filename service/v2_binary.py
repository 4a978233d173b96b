"""The binary tensor data extension of the Open Inference Protocol's HTTP API (Triton's
`binary_tensor_data`, what KServe's and Triton's Python clients send by default for tensors set
from numpy arrays).

A request carries the JSON header first, its length in bytes in the `Inference-Header-Content-
Length` header, then the raw data of each input whose `parameters.binary_data_size` is set, in the
order of `inputs`: little-endian numbers, BOOL one byte per element, BYTES as a 4-byte little-endian
length before each element. A response puts the outputs asked for in binary (`"binary_data": true`
on the output, or `"binary_data_output": true` on the request) after its JSON the same way.

Missing values: JSON has `null`; binary numbers have NaN, which is read as missing (the same as
`null`). A binary BOOL or BYTES element cannot be missing: leave the feature's tensor out instead.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

HEADER = "inference-header-content-length"


class BinaryDataError(ValueError):
    """Binary data that does not match its JSON header; answered 400 with this message."""


DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "BOOL": "<u1",
}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a request body; all JSON without the header."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BinaryDataError(f"Inference-Header-Content-Length {header_length!r} is not a number of bytes") from None
    if not 0 <= n <= len(body):
        raise BinaryDataError(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
    return body[:n], body[n:]


def _bytes_elements(raw: bytes, name: str) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BinaryDataError(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BinaryDataError(f"input {name!r}: BYTES element {len(values)} is longer than the data left")
        try:
            values.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BinaryDataError(f"input {name!r}: BYTES element {len(values)} is not UTF-8 text") from None
        offset += length
    return values


def decode_tensor(raw: bytes, datatype: str, name: str) -> list[Any]:
    """One input's binary data as a flat list of Python values (NaN → None, BOOL → bool)."""
    if datatype == "BYTES":
        return _bytes_elements(raw, name)
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise BinaryDataError(f"input {name!r}: unknown datatype {datatype}")
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise BinaryDataError(f"input {name!r}: {len(raw)} bytes are not whole {datatype} elements of {width} bytes")
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        return [bool(v) for v in array.tolist()]
    values = array.tolist()
    if array.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in values]
    return values


def read_inputs(inputs: list[Any], binary: bytes) -> None:
    """Fill each input's `data` from `binary`, in order, where `parameters.binary_data_size` is set."""
    offset = 0
    for tensor in inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BinaryDataError(f"input {tensor.name!r}: binary_data_size must be a byte count, got {size!r}")
        if tensor.data is not None:
            raise BinaryDataError(f"input {tensor.name!r} has both data and binary_data_size; send one")
        if offset + size > len(binary):
            raise BinaryDataError(
                f"input {tensor.name!r}: binary_data_size {size} runs past the {len(binary)} bytes sent"
            )
        tensor.data = decode_tensor(binary[offset : offset + size], tensor.datatype, tensor.name)
        offset += size
    if offset != len(binary):
        raise BinaryDataError(f"{len(binary) - offset} bytes after the last binary input belong to no input")


def encode_output(values: list[Any], datatype: str) -> bytes:
    """An output's values as the extension's binary data (FP64 little-endian, BOOL one byte each)."""
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()
