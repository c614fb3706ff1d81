"""deceptwatch: monitor language models for deceptive alignment.

Importing this package loads neither torch nor transformers and touches no disk or network;
the public names below are resolved lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "monitor": "deceptwatch._monitor",
    "monitor_async": "deceptwatch._monitor",
    "MonitorReport": "deceptwatch._report",
    "GenerationConfig": "deceptwatch.backends",  # monitor(generation=...)
    "Scenario": "deceptwatch.scenarios",
    "ScenarioRecord": "deceptwatch.scenarios",
    "Trial": "deceptwatch.scenarios",
    "load_suite": "deceptwatch.scenarios",
    "load_path": "deceptwatch.scenarios",
    "expand": "deceptwatch.scenarios",
    "InputError": "deceptwatch._errors",
    "BackendError": "deceptwatch._errors",
}

if TYPE_CHECKING:
    from deceptwatch._errors import BackendError, InputError
    from deceptwatch._monitor import monitor, monitor_async
    from deceptwatch._report import MonitorReport
    from deceptwatch.backends import GenerationConfig
    from deceptwatch.scenarios import Scenario, ScenarioRecord, Trial, expand, load_path, load_suite


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deceptwatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BackendError",
    "GenerationConfig",
    "InputError",
    "MonitorReport",
    "Scenario",
    "ScenarioRecord",
    "Trial",
    "__version__",
    "expand",
    "load_path",
    "load_suite",
    "monitor",
    "monitor_async",
]
