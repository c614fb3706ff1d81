"""Multiplicity adjustment: Benjamini–Hochberg q-values and Holm adjusted p-values.

NaN entries (findings without a test) pass through as NaN and do not count towards m.
`adjust` applies either by name; the canonical names are what reports print.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def _prepare(
    p: Sequence[float] | npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError("p-values must form a one-dimensional sequence")
    finite = ~np.isnan(arr)
    if np.any((arr[finite] < 0.0) | (arr[finite] > 1.0)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN)")
    return arr, finite


def benjamini_hochberg(p: Sequence[float] | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Benjamini–Hochberg (1995) q-values: q_(i) = min over j >= i of m·p_(j)/j, capped at 1.

    The result is in the input order and monotone in p.
    """
    arr, finite = _prepare(p)
    out = np.full(arr.shape, np.nan)
    vals = arr[finite]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    ranked = vals[order] * m / np.arange(1, m + 1)
    q = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    adjusted = np.empty(m)
    adjusted[order] = q
    out[finite] = adjusted
    return out


def holm(p: Sequence[float] | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Holm (1979) step-down adjusted p-values.

    p_adj_(i) = max over j <= i of (m − j + 1)·p_(j), capped at 1, in the input order.
    """
    arr, finite = _prepare(p)
    out = np.full(arr.shape, np.nan)
    vals = arr[finite]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    ranked = vals[order] * (m - np.arange(m))
    adj = np.minimum(np.maximum.accumulate(ranked), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adj
    out[finite] = adjusted
    return out


BENJAMINI_HOCHBERG = "benjamini_hochberg"
HOLM = "holm"
MULTIPLICITY_METHODS: tuple[str, ...] = (BENJAMINI_HOCHBERG, HOLM)
_ALIASES = {
    "bh": BENJAMINI_HOCHBERG,
    "fdr_bh": BENJAMINI_HOCHBERG,
    BENJAMINI_HOCHBERG: BENJAMINI_HOCHBERG,
    HOLM: HOLM,
}


def multiplicity_method(name: str) -> str:
    """The canonical name of a multiplicity method: ``bh`` → ``benjamini_hochberg``, ``holm``.

    Raises ValueError naming the accepted names for anything else.
    """
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown multiplicity method {name!r}; use 'bh' (Benjamini–Hochberg, "
            "false-discovery rate) or 'holm' (family-wise error rate)"
        )
    return _ALIASES[key]


def adjust(p: Sequence[float] | npt.NDArray[np.floating], method: str) -> npt.NDArray[np.float64]:
    """Adjusted p-values by `method` (``bh``/``benjamini_hochberg`` or ``holm``)."""
    if multiplicity_method(method) == HOLM:
        return holm(p)
    return benjamini_hochberg(p)
