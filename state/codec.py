"""Value encoding: a version byte, then msgpack (msgspec) for records. Never pickle."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from state.errors import StateCorrupted

__all__ = ["VERSION", "encode_value", "decode_value"]

VERSION = 1
T = TypeVar("T")

_enc = msgspec.msgpack.Encoder()


def encode_value(value: msgspec.Struct) -> bytes:
    """Struct -> ``bytes([VERSION]) + msgpack``."""
    return bytes((VERSION,)) + _enc.encode(value)


def decode_value(key: bytes, raw: bytes, type_: type[T]) -> T:
    """Inverse of :func:`encode_value`.

    Raises
    ------
    StateCorrupted
        If the version byte is unknown or the payload does not decode as ``type_``.
    """
    if not raw or raw[0] != VERSION:
        raise StateCorrupted(key, f"unknown value version {raw[:1]!r}, expected {VERSION}")
    try:
        return msgspec.msgpack.decode(raw[1:], type=type_)
    except msgspec.DecodeError as exc:
        raise StateCorrupted(key, str(exc)) from exc
