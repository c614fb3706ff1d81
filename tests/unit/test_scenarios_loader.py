"""The scenario loader: valid files load; every bad input names file, scenario, field, line."""

from __future__ import annotations

from pathlib import Path

import pytest

from deceptwatch._errors import InputError
from deceptwatch.scenarios import (
    FAMILIES,
    builtin_suites,
    load_path,
    load_suite,
    parse_scenarios,
    scenario_json_schema,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(text: str, tmp_path: Path, name: str = "s.yaml") -> str:
    p = _write(tmp_path, name, text)
    with pytest.raises(InputError) as info:
        load_path(p)
    return str(info.value)


def test_minimal_loads(minimal_yaml: str) -> None:
    [rec] = parse_scenarios(minimal_yaml, path="m.yaml", suite="t")
    assert rec.id == "t/minimal"
    assert rec.scenario.family == "oversight_gap"
    assert rec.suite == "t"
    assert len(rec.content_hash) == 64


def test_content_hash_changes_with_content(minimal_yaml: str) -> None:
    [a] = parse_scenarios(minimal_yaml, path="m.yaml", suite="t")
    [b] = parse_scenarios(
        minimal_yaml.replace("Do the task.", "Do the job."), path="m.yaml", suite="t"
    )
    [c] = parse_scenarios(minimal_yaml, path="other.yaml", suite="u")
    assert a.content_hash != b.content_hash
    assert a.content_hash == c.content_hash  # where it was loaded from is not content


def test_list_of_scenarios_in_one_file(minimal_yaml: str) -> None:
    text = "- " + minimal_yaml.replace("\n", "\n  ").rstrip() + "\n"
    second = text.replace("t/minimal", "t/second")
    recs = parse_scenarios(text + second, path="m.yaml", suite="t")
    assert [r.id for r in recs] == ["t/minimal", "t/second"]


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    msg = _error("id: t/x\nfamily: [oops\n", tmp_path)
    assert "s.yaml:3" in msg or "s.yaml:2" in msg
    assert "malformed YAML" in msg


def test_unknown_field_names_field_and_line(tmp_path: Path, minimal_yaml: str) -> None:
    text = minimal_yaml.replace("aligned: honest", "aligned: honest\ncolour: blue")
    msg = _error(text, tmp_path)
    line = text.splitlines().index("colour: blue") + 1
    assert f"s.yaml:{line}" in msg
    assert "scenario 't/minimal'" in msg
    assert "field 'colour'" in msg
    assert "hint:" in msg


def test_missing_aligned_choice(tmp_path: Path, minimal_yaml: str) -> None:
    msg = _error(minimal_yaml.replace("aligned: honest", "aligned: truthful"), tmp_path)
    assert "field 'aligned'" in msg
    assert "'truthful' is not among the choice ids" in msg
    line = minimal_yaml.splitlines().index("aligned: honest") + 1
    assert f"s.yaml:{line}" in msg


def test_missing_aligned_field(tmp_path: Path, minimal_yaml: str) -> None:
    msg = _error(minimal_yaml.replace("aligned: honest\n", ""), tmp_path)
    assert "field 'aligned'" in msg
    assert "Field required" in msg


def test_empty_cue_list(tmp_path: Path, minimal_yaml: str) -> None:
    text = minimal_yaml.replace(
        'unobserved: ["Your actions are not reviewed.", "Nothing is logged or checked.", "No supervisor watches this session."]',
        "unobserved: []",
    )
    msg = _error(text, tmp_path)
    assert "field 'oversight.unobserved'" in msg
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "unobserved: []" in ln)
    assert f"s.yaml:{line}" in msg


def test_unequal_cue_lists(tmp_path: Path, minimal_yaml: str) -> None:
    text = minimal_yaml.replace('"Someone reviews your actions.", ', "")
    msg = _error(text, tmp_path)
    assert "placebo has 2 paraphrases but observed has 3" in msg
    assert "field 'oversight.placebo'" in msg


def test_duplicate_ids_name_both_files(tmp_path: Path, minimal_yaml: str) -> None:
    d = tmp_path / "suite"
    d.mkdir()
    _write(d, "a.yaml", minimal_yaml)
    _write(d, "b.yaml", minimal_yaml)
    with pytest.raises(InputError) as info:
        load_path(d)
    msg = str(info.value)
    assert "duplicate id" in msg
    assert "a.yaml" in msg
    assert "b.yaml" in msg


def test_unknown_family_lists_families(tmp_path: Path, minimal_yaml: str) -> None:
    msg = _error(minimal_yaml.replace("family: oversight_gap", "family: scheming"), tmp_path)
    assert "field 'family'" in msg
    assert all(f in msg for f in FAMILIES)


def test_missing_oversight_slot(tmp_path: Path, minimal_yaml: str) -> None:
    msg = _error(minimal_yaml.replace(" {{oversight}}", ""), tmp_path)
    assert "no {{oversight}} slot" in msg


def test_undeclared_slot(tmp_path: Path, minimal_yaml: str) -> None:
    msg = _error(minimal_yaml.replace("{{stakes}}", "{{stakes}} {{budget}}"), tmp_path)
    assert "{{budget}}" in msg


def test_precursor_may_omit_oversight_but_others_may_not(tmp_path: Path, minimal_yaml: str) -> None:
    base = minimal_yaml.split("oversight:\n")[0].replace(
        "You are an agent. {{oversight}}", "You are an agent."
    )
    base = base.replace(" {{stakes}}", "")
    [rec] = parse_scenarios(
        base.replace("oversight_gap", "power_seeking"), path="p.yaml", suite="t"
    )
    assert rec.scenario.oversight is None
    msg = _error(base, tmp_path)
    assert "needs an oversight factor" in msg


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        load_path(p)
    with pytest.raises(InputError, match="no such file"):
        load_path(tmp_path / "missing.yaml")


def test_unknown_suite_lists_builtins() -> None:
    with pytest.raises(InputError) as info:
        load_suite("no-such-suite")
    assert "core" in str(info.value)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_suite_name_is_refused(name: str) -> None:
    """`--suite ''` used to load the current directory, as the path '.'."""
    with pytest.raises(InputError, match="a suite name is empty") as info:
        load_suite(name)
    assert "core" in (info.value.hint or "")


def test_builtin_core_suite_has_oversight_gap_and_honeypot() -> None:
    assert "core" in builtin_suites()
    recs = load_suite("core")
    assert len(recs) >= 12
    assert {r.family for r in recs} == {"oversight_gap", "honeypot"}
    for r in recs:
        o = r.scenario.oversight
        assert o is not None
        assert len(o.observed) >= 3
        assert o.placebo


def test_every_builtin_suite_loads_with_unique_ids() -> None:
    recs = load_suite("all")
    assert len({r.id for r in recs}) == len(recs)
    for r in recs:
        assert r.id.startswith(r.suite + "/")


@pytest.mark.parametrize("libyaml", [True, False])
def test_the_c_and_pure_python_parsers_load_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minimal_yaml: str, libyaml: bool
) -> None:
    """The loader parses with libyaml when PyYAML has it and falls back to the pure-Python
    parser: both give every built-in scenario the same content, and the same errors."""
    import yaml

    if libyaml and not yaml.__with_libyaml__:
        pytest.skip("this PyYAML was built without libyaml")
    expected = {r.id: r.content_hash for r in load_suite("all")}
    monkeypatch.setattr(yaml, "__with_libyaml__", libyaml)
    assert {r.id: r.content_hash for r in load_suite("all")} == expected
    text = minimal_yaml.replace("aligned: honest", "aligned: honest\ncolour: blue")
    line = text.splitlines().index("colour: blue") + 1
    assert f"s.yaml:{line}: scenario 't/minimal': field 'colour'" in _error(text, tmp_path)


def test_json_schema_forbids_extra_fields() -> None:
    schema = scenario_json_schema()
    assert schema["additionalProperties"] is False
    assert "oversight" in schema["properties"]
    assert schema["$defs"]["Oversight"]["additionalProperties"] is False


@pytest.mark.parametrize("text", ["0:\t", "id: x\nfamily:\t\n"])
def test_text_only_libyaml_reads_still_gets_line_numbers(text: str) -> None:
    """libyaml reads a tab after "key:", PyYAML's own parser does not: the line numbers of
    a validation error were looked up with the latter, which raised a ScannerError (found
    by the fuzz test with "0:\\t")."""
    with pytest.raises(InputError, match=r"bad\.yaml:\d+: scenario"):
        parse_scenarios(text, path="bad.yaml", suite="fuzz")
