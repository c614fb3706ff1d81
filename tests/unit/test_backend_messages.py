"""Backend helpers: `merge_system` for a chat template that refuses a system role, and the
connections a backend holds open (for the limit on open files)."""

from __future__ import annotations

import pytest

from deceptwatch._errors import InputError
from deceptwatch.backends import get_backend
from deceptwatch.backends._base import merge_system, system_option


def test_the_system_message_heads_the_first_user_message() -> None:
    messages = [
        {"role": "system", "content": "You are watched."},
        {"role": "user", "content": "Pick (A) or (B)."},
    ]
    assert merge_system(messages) == [
        {"role": "user", "content": "You are watched.\n\nPick (A) or (B)."}
    ]
    assert messages[1]["content"] == "Pick (A) or (B)."  # the input is left as it was


def test_several_system_messages_keep_their_order_and_the_turns_stay() -> None:
    messages = [
        {"role": "system", "content": "S1"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "system", "content": "S2"},
        {"role": "user", "content": "U2"},
    ]
    assert merge_system(messages) == [
        {"role": "user", "content": "S1\n\nS2\n\nU1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]


@pytest.mark.parametrize(
    ("messages", "merged"),
    [
        ([{"role": "system", "content": "S"}], [{"role": "user", "content": "S"}]),
        (
            [{"role": "assistant", "content": "A"}, {"role": "system", "content": "S"}],
            [{"role": "assistant", "content": "A"}, {"role": "user", "content": "S"}],
        ),
        ([{"role": "user", "content": "U"}], [{"role": "user", "content": "U"}]),
    ],
)
def test_without_a_user_message_the_system_becomes_one_in_its_place(
    messages: list[dict[str, str]], merged: list[dict[str, str]]
) -> None:
    assert merge_system(messages) == merged


def test_the_option_takes_keep_or_merge_only() -> None:
    assert system_option({}, "hf") == "keep"
    assert system_option({"system": "merge"}, "hf") == "merge"
    with pytest.raises(InputError, match="system must be 'keep' or 'merge', not 'drop'"):
        system_option({"system": "drop"}, "openai")


def test_merge_changes_the_openai_cache_key_and_keep_does_not() -> None:
    url = {"base_url": "http://127.0.0.1:9/v1"}
    keep = get_backend("openai:m", url).cache_key()
    assert get_backend("openai:m", {**url, "system": "keep"}).cache_key() == keep
    assert keep == {"spec": "openai:m", "base_url": "http://127.0.0.1:9/v1"}  # ids as before
    merged = get_backend("openai:m", {**url, "system": "merge"}).cache_key()
    assert merged == {**keep, "system": "merge"}


def test_openai_holds_at_most_one_connection_per_call_in_flight() -> None:
    url = {"base_url": "http://127.0.0.1:9/v1"}
    assert get_backend("openai:m", url).connections(64) == 64
    assert get_backend("openai:m", {**url, "max_connections": "8"}).connections(64) == 8
    assert get_backend("openai:m", {**url, "max_connections": "5000"}).connections(64) == 64
