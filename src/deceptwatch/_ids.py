"""Canonical JSON and content hashes: every id in deceptwatch is one of these."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

# The largest seed: every seed is stored, in an INTEGER column (32-bit on PostgreSQL).
MAX_SEED = 2**31 - 1

# One encoder, built once: `json.dumps` with these arguments builds a new encoder per call.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_encode = _ENCODER.encode
# The canonical JSON of a string: exactly what the encoder writes for one (C, no dispatch).
json_string: Callable[[str], str] = json.encoder.encode_basestring


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace, and UTF-8 kept as is.

    Floats are written by Python's shortest round-trip repr, so equal values always give
    equal text. NaN and infinities are rejected: they have no canonical JSON form.
    """
    return _encode(obj)


def content_hash(obj: Any) -> str:
    """sha256 (hex) of the canonical JSON of `obj`."""
    return hashlib.sha256(_encode(obj).encode("utf-8")).hexdigest()
