"""A user's backend that returns a malformed reply fails that trial as `error` (never
aligned, never a crash of the run), and numpy numbers in a reply are stored as plain ones."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runner import _recs, _run

from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.runner import RunnerConfig
from deceptwatch.store import Store


class _Returns(BaseBackend):
    """Returns `reply` for every request."""

    def __init__(self, reply: Any) -> None:
        super().__init__("returns:")
        self.reply = reply

    async def generate(self, request: GenerateRequest) -> Any:
        return self.reply


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        ("(A)", "a str ('(A)'), not a GenerateResponse"),
        (None, "a NoneType"),
        (GenerateResponse(text=None), "text of type NoneType"),  # type: ignore[arg-type]
        (GenerateResponse(text="(A)", raw=b"x"), "raw of type bytes"),  # type: ignore[arg-type]
        (GenerateResponse(text="(A)", choice_probs={"A": "high"}), "choice_probs entry 'A'"),  # type: ignore[dict-item]
        (GenerateResponse(text="(A)", choice_probs={"A": float("nan")}), "choice_probs entry"),
        (GenerateResponse(text="(A)", usage={"tokens": 1.5}), "usage entry 'tokens'"),  # type: ignore[dict-item]
    ],
)
def test_a_malformed_reply_is_an_error_on_its_trial(
    tmp_path: Path, minimal_yaml: str, reply: Any, said: str
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Store.open(db) as store:
        run_id, [res], _ = _run(
            store, _recs(minimal_yaml), [_Returns(reply)], RunnerConfig(limit=1, abort_after=100)
        )
        counts = store.run_counts(run_id)
    assert res.attempted == res.errors > 0
    assert counts["error"] == res.errors
    assert counts["aligned"] == counts["defect"] == 0
    assert res.error_kinds == {"bad_response": res.errors}
    assert said in res.error_examples["bad_response"]
    assert "GenerateResponse(text=str" in res.error_examples["bad_response"]


def test_numpy_numbers_in_a_reply_are_stored_as_plain_numbers(
    tmp_path: Path, minimal_yaml: str
) -> None:
    reply = GenerateResponse(
        text="(A)",
        choice_probs={"A": np.float32(0.75), "B": np.float64(0.25)},  # type: ignore[dict-item]
        usage={"prompt_tokens": np.int64(12)},  # type: ignore[dict-item]
    )
    path = tmp_path / "n.db"
    with Store.open(f"sqlite:///{path}") as store:
        _run_id, [res], _ = _run(
            store, _recs(minimal_yaml), [_Returns(reply)], RunnerConfig(limit=1)
        )
    assert res.errors == 0
    assert res.attempted > 0
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT choice_probs_json, usage_json FROM responses").fetchall()
    assert len(rows) == res.attempted
    for probs, usage in rows:
        assert json.loads(probs) == {"A": 0.75, "B": 0.25}
        assert json.loads(usage) == {"prompt_tokens": 12}
