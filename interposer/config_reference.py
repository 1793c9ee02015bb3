"""Render the configuration reference in docs/configuration.md from the config model itself.

``python -m interposer.config_reference`` rewrites the generated part of the
page and the JSON Schema beside it; a test fails when the page and the model disagree, so the documentation
cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
import typing

from pydantic import BaseModel

from .config import InterposerConfig
from .docgen import DOCS, rewrite

PAGE = DOCS / "configuration.md"
SCHEMA = DOCS / "config.schema.json"
COMMAND = "python -m interposer.config_reference"


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    if isinstance(annotation, type):
        text = annotation.__name__
    elif typing.get_origin(annotation) is typing.Literal:
        text = " | ".join(repr(value) for value in typing.get_args(annotation))
    return text.replace("|", "\\|")


_LIMITS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<", "pattern": "matches"}


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
        rows.append(
            f"| `{prefix}{name}` | {_type_name(annotation)}{constraint} | `{field.default!r}` | {description} |"
        )
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
