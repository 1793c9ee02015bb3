"""Render the configuration reference in docs/configuration.md from the config model itself.

``python -m interposer.config_reference`` rewrites the generated part of the
page and the JSON Schema beside it; a test fails when the page and the model disagree, so the documentation
cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from .config import InterposerConfig
from .docgen import DOCS, rewrite

PAGE = DOCS / "configuration.md"
SCHEMA = DOCS / "config.schema.json"
COMMAND = "python -m interposer.config_reference"


_NAMES: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    type(None): "null",
}
"""Types as a YAML user knows them."""


def _type_name(annotation: object) -> str:
    """A field's type in the words of a YAML file: 'list of string', 'number or null', 'mapping of …'."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(value) for value in arguments)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in arguments)
    if origin is tuple or origin is list:
        return f"list of {_type_name(arguments[0])}"
    if origin is dict:
        return f"mapping of {_type_name(arguments[0])} to {_type_name(arguments[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{annotation.__name__} mapping"
    return _NAMES.get(annotation, str(annotation))


def _default(field: FieldInfo) -> str:
    """The default as YAML would spell it; a field without one is required."""
    if field.is_required():
        return "required"
    value = to_jsonable_python(field.get_default(call_default_factory=True))
    return f"`{json.dumps(value)}`"


_LIMITS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<", "pattern": "matches"}


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    properties = model.model_json_schema()["properties"]
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{prefix}{name}."))
            continue
        options = properties[name].get("anyOf", [properties[name]])
        limits = [f"{symbol} {option[key]}" for option in options for key, symbol in _LIMITS.items() if key in option]
        constraint = f" ({', '.join(limits)})" if limits else ""
        description = (field.description or "").replace("|", "\\|")
        kind = (_type_name(annotation) + constraint).replace("|", "\\|")
        default = _default(field).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {kind} | {default} | {description} |")
    return rows


def render() -> str:
    """The generated reference table."""
    table = ["| field | type | default | meaning |", "|---|---|---|---|", *_rows(InterposerConfig, "")]
    return "\n".join(table)


def json_schema() -> str:
    """The JSON Schema of the whole configuration, for editors and CI checks of config files."""
    schema = InterposerConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnfs-interposer configuration"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    rewrite(PAGE, COMMAND, render())
    SCHEMA.write_text(json_schema())
    sys.stdout.write(f"rewrote the generated part of {PAGE} and {SCHEMA}\n")
