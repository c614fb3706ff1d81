"""Backends: one small async protocol, resolved from a spec such as ``openai:MODEL``."""

from deceptwatch.backends._base import (
    Backend,
    BaseBackend,
    GenerateRequest,
    GenerateResponse,
    GenerationConfig,
)
from deceptwatch.backends._registry import (
    ENTRY_POINT_GROUP,
    backend,
    backend_names,
    get_backend,
    parse_options,
    split_spec,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BaseBackend",
    "GenerateRequest",
    "GenerateResponse",
    "GenerationConfig",
    "backend",
    "backend_names",
    "get_backend",
    "parse_options",
    "split_spec",
]
