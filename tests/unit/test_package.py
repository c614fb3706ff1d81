"""`import deceptwatch` stays light: no torch, no transformers, no disk or network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
