"""Multiplicity adjustment: Benjamini–Hochberg q-values and Holm adjusted p-values.

NaN entries (findings without a test) pass through as NaN and do not count towards m.
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
