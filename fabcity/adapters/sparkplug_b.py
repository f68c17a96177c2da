"""A decoder of Sparkplug B payloads (`org.eclipse.tahu.protobuf.Payload`, proto2).

Written against the field numbers of Eclipse Tahu's `sparkplug_b.proto`, because the Python
Sparkplug packages pin paho-mqtt below 2 or old protobuf releases. Only what the platform
reads is decoded: the payload's timestamp, seq and metrics, and each metric's name, alias,
timestamp, datatype, null flag and scalar value. DataSets, Templates, PropertySets and
metadata are skipped (their bytes are length-delimited, so skipping is exact).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Wire types (protobuf encoding).
VARINT, I64, LEN, I32 = 0, 1, 2, 5

# Sparkplug DataType enum (spec 6.4.16).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
BYTES, FILE = 17, 18
SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}

Value = int | float | bool | str | bytes | None


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class Metric:
    name: str | None
    alias: int | None
    timestamp: int | None  # unix ms
    datatype: int | None
    value: Value
    is_null: bool = False
    is_historical: bool = False


@dataclass(frozen=True)
class Payload:
    timestamp: int | None  # unix ms
    seq: int | None
    metrics: tuple[Metric, ...]
    uuid: str | None = None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for every field of one message."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire == I64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == I32:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == LEN:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise DecodeError("truncated field")
        out.append((number, wire, value))
    return out


def _signed(value: int, datatype: int | None) -> int:
    """Signed Sparkplug types travel as the two's-complement bits in an unsigned field."""
    bits = SIGNED_BITS.get(datatype or 0)
    if bits is None:
        return value
    # Encoders differ: some store an Int8 as its 8 bits, others sign-extended to 32/64.
    for width in sorted({bits, 32 if bits < 64 else 64, 64}):
        if value < (1 << width):
            return value - (1 << width) if value >= (1 << (width - 1)) else value
    return value


def _metric(data: bytes) -> Metric:
    name: str | None = None
    alias = timestamp = datatype = None
    value: Value = None
    is_null = is_historical = False
    for number, wire, raw in _fields(data):
        if number == 1 and isinstance(raw, bytes):
            name = raw.decode("utf-8", errors="replace")
        elif number == 2 and isinstance(raw, int):
            alias = raw
        elif number == 3 and isinstance(raw, int):
            timestamp = raw
        elif number == 4 and isinstance(raw, int):
            datatype = raw
        elif number == 5 and isinstance(raw, int):
            is_historical = bool(raw)
        elif number == 7 and isinstance(raw, int):
            is_null = bool(raw)
        elif number in (10, 11) and isinstance(raw, int):
            value = raw & (0xFFFFFFFF if number == 10 else 0xFFFFFFFFFFFFFFFF)
        elif number == 12 and wire == I32 and isinstance(raw, bytes):
            value = struct.unpack("<f", raw)[0]
        elif number == 13 and wire == I64 and isinstance(raw, bytes):
            value = struct.unpack("<d", raw)[0]
        elif number == 14 and isinstance(raw, int):
            value = bool(raw)
        elif number == 15 and isinstance(raw, bytes):
            value = raw.decode("utf-8", errors="replace")
        elif number == 16 and isinstance(raw, bytes):
            value = raw
    if isinstance(value, int) and not isinstance(value, bool):
        value = _signed(value, datatype)
    return Metric(
        name, alias, timestamp, datatype, None if is_null else value, is_null, is_historical
    )


def decode(data: bytes) -> Payload:
    timestamp = seq = None
    uuid: str | None = None
    metrics: list[Metric] = []
    for number, _wire, raw in _fields(data):
        if number == 1 and isinstance(raw, int):
            timestamp = raw
        elif number == 2 and isinstance(raw, bytes):
            metrics.append(_metric(raw))
        elif number == 3 and isinstance(raw, int):
            seq = raw
        elif number == 4 and isinstance(raw, bytes):
            uuid = raw.decode("utf-8", errors="replace")
    return Payload(timestamp, seq, tuple(metrics), uuid)


# Encoding: for tests, benchmarks and simulators, the inverse of the above ------------------


def _encode_varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _len(number: int, body: bytes) -> bytes:
    return _key(number, LEN) + _encode_varint(len(body)) + body


def encode_metric(metric: Metric) -> bytes:
    out = b""
    if metric.name is not None:
        out += _len(1, metric.name.encode())
    if metric.alias is not None:
        out += _key(2, VARINT) + _encode_varint(metric.alias)
    if metric.timestamp is not None:
        out += _key(3, VARINT) + _encode_varint(metric.timestamp)
    if metric.datatype is not None:
        out += _key(4, VARINT) + _encode_varint(metric.datatype)
    if metric.is_historical:
        out += _key(5, VARINT) + b"\x01"
    value, kind = metric.value, metric.datatype
    if metric.is_null or value is None:
        out += _key(7, VARINT) + b"\x01"
    elif isinstance(value, bool):
        out += _key(14, VARINT) + _encode_varint(int(value))
    elif isinstance(value, int) and kind in (INT64, UINT64, DATETIME):
        out += _key(11, VARINT) + _encode_varint(value)
    elif isinstance(value, int):
        out += _key(10, VARINT) + _encode_varint(value & 0xFFFFFFFF)
    elif isinstance(value, float) and kind == FLOAT:
        out += _key(12, I32) + struct.pack("<f", value)
    elif isinstance(value, float):
        out += _key(13, I64) + struct.pack("<d", value)
    elif isinstance(value, str):
        out += _len(15, value.encode())
    elif isinstance(value, bytes):
        out += _len(16, value)
    return out


def encode(payload: Payload) -> bytes:
    out = b""
    if payload.timestamp is not None:
        out += _key(1, VARINT) + _encode_varint(payload.timestamp)
    for metric in payload.metrics:
        out += _len(2, encode_metric(metric))
    if payload.seq is not None:
        out += _key(3, VARINT) + _encode_varint(payload.seq)
    if payload.uuid is not None:
        out += _len(4, payload.uuid.encode())
    return out
