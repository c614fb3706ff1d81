"""The JSON Schema of a scenario file, for editors (``deceptwatch scenarios schema``)."""

from __future__ import annotations

from typing import Any

from deceptwatch.scenarios._schema import Scenario


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of a scenario file, for editors (e.g. yaml-language-server): one scenario
    (a mapping), or a list of them. It takes what the loader takes, but for the checks
    across fields (an `aligned` among the choice ids, a declared slot, ...)."""
    schema = Scenario.model_json_schema()
    defs = schema["$defs"]
    # a factor level may be written as its text alone (FactorLevel._from_str)
    level = defs["FactorLevel"]
    shorthand = {**level["properties"]["text"], "description": "Shorthand for {text: ...}."}
    shorthand.pop("title", None)
    defs["FactorLevel"] = {"anyOf": [shorthand, level]}
    _close_pattern_properties(schema)
    # the properties above apply to a mapping; a list holds such mappings
    schema["type"] = ["object", "array"]
    schema["items"] = {"$ref": "#", "type": "object"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deceptwatch scenario"
    return schema


def _close_pattern_properties(node: Any) -> None:
    """A mapping whose keys follow a pattern (factors, environment.files) takes no other
    key: pydantic leaves `additionalProperties` open beside `patternProperties`."""
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_pattern_properties(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_properties(value)
