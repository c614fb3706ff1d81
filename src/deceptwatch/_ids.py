"""Canonical JSON and content hashes: every id in deceptwatch is one of these."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace, and UTF-8 kept as is.

    Floats are written by Python's shortest round-trip repr, so equal values always give
    equal text. NaN and infinities are rejected: they have no canonical JSON form.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_hash(obj: Any) -> str:
    """sha256 (hex) of the canonical JSON of `obj`."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
