"""docs/families.md is generated from the scenario files and must equal the script's output."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from deceptwatch.scenarios import FAMILIES

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_family_docs", ROOT / "scripts" / "render_family_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_page_equals_the_script_output() -> None:
    page = (ROOT / "docs" / "families.md").read_text(encoding="utf-8")
    assert page == _script().render(), (
        "docs/families.md is stale: run python scripts/render_family_docs.py"
    )


def test_page_has_every_family_with_a_rendered_pair() -> None:
    page = (ROOT / "docs" / "families.md").read_text(encoding="utf-8")
    sections = page.split("\n## ")[1:]
    assert [s.split("`")[1] for s in sections] == list(FAMILIES)
    for section in sections:
        if "No built-in scenario in this family yet." in section:
            assert section.startswith("`simulated_env`")
            continue
        has_pair = "**observed**" in section and "**unobserved**" in section
        assert has_pair or "**baseline**" in section, section[:80]
        assert "Reply with" in section or "[user]" in section


def test_check_mode_detects_a_stale_page(tmp_path: Path) -> None:
    module = _script()
    page = tmp_path / "families.md"
    module.PAGE = page  # type: ignore[attr-defined]
    page.write_text("old\n", encoding="utf-8")
    assert module.main(["--check"]) == 1
    page.write_text(module.render(), encoding="utf-8")
    assert module.main(["--check"]) == 0
