"""The VolumeExperiment CRD, generated from the models the node plugin validates with.

``python -m interposer.csi.crd`` (run by ``./tasks.sh generate``) writes ``charts/interposer/crds/``; a test
fails when the committed file and the models disagree.  The spec's schema is pydantic's JSON Schema of
``ExperimentSpec``, its runtime sections being ``ctl set``'s own models, rewritten into the structural
OpenAPI v3 subset the API server requires, so a bad field (an unknown operation, a probability of 2, a
misspelt key under server-side field validation) is refused by the API server itself, with the field's path.

What a structural schema cannot say is checked by the models in the node plugin and reported in the
resource's ``Invalid`` condition with the field's name: the rules across fields (``high`` at least ``low``,
``every_nth`` or ``only_nth``, ``errno`` not with ``short``), an errno symbol, a latency field that belongs to
another ``kind``.  The chart installs the file from crds/, as Helm documents for CRDs: before the templates,
never templated, and never deleted by an uninstall (that would delete every experiment in the cluster).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .experiment import (
    API_VERSION,
    CONDITIONS,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    SPEC_SECTIONS_REQUIRED,
    VERSION,
    ExperimentSpec,
)

OUTPUT = Path(__file__).resolve().parents[2] / "charts" / "interposer" / "crds" / f"{PLURAL}.yaml"
COMMAND = "python -m interposer.csi.crd"

_DROPPED = {"title", "default", "additionalProperties", "discriminator", "$defs"}
"""Keywords a structural schema forbids or that would change the object: the API server would write pydantic's
defaults into every resource (the models apply them anyway), and ``additionalProperties: false`` is replaced
by pruning plus server-side field validation, which names the unknown field."""
_NOT_IN_JUNCTORS = {"type", "description", "nullable", "x-kubernetes-preserve-unknown-fields", "items", "properties"}

PHASES = ("Applied", "Reverted", "Refused", "Failed")
"""A target's phase in the status: its sections are in effect, it was given back its own, it did not opt in,
the mount refused or did not answer."""


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
        return {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node as structural OpenAPI v3: references inlined, ``X | None`` as nullable, a union of
    object kinds merged into one object whose ``oneOf`` branches hold only what tells the kinds apart."""
    node = _resolve(node, definitions)
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives is not None:
        outer = {key: value for key, value in node.items() if key not in ("anyOf", "oneOf")}
        options = [_resolve(option, definitions) for option in alternatives]
        nullable = any(option.get("type") == "null" for option in options)
        options = [option for option in options if option.get("type") != "null"]
        if len(options) == 1:
            merged = structural({**options[0], **outer}, definitions)
        elif all(option.get("type") == "object" and "properties" in option for option in options):
            merged = _object_union(options, outer, definitions)
        else:
            # Scalars and mappings mixed (errno: a symbol or weights): any value here, the model checks it.
            merged = {**_plain(outer), "x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            merged["nullable"] = True
        return merged
    result = _plain(node)
    if "const" in result:
        result["enum"] = [result.pop("const")]
    for bound in ("Minimum", "Maximum"):
        exclusive = result.pop(f"exclusive{bound}", None)
        if exclusive is not None:
            result[bound.lower()] = exclusive
            result[f"exclusive{bound}"] = True
    if "properties" in node:
        result["properties"] = {name: structural(child, definitions) for name, child in node["properties"].items()}
    if "items" in node:
        result["items"] = structural(node["items"], definitions)
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = structural(node["additionalProperties"], definitions)
    return result


def _plain(node: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if key not in _DROPPED | {"properties", "items"}}


def _object_union(options: list[dict[str, Any]], outer: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Several object kinds (a discriminated union) as one object: every property outside, typed; each kind a
    ``oneOf`` branch with its required fields and its properties' value checks (enum, bounds)."""
    properties: dict[str, Any] = {}
    branches = []
    for option in options:
        converted = structural(option, definitions)
        branch_properties = {}
        for name, child in converted.get("properties", {}).items():
            properties.setdefault(name, {key: child[key] for key in _NOT_IN_JUNCTORS if key in child})
            checks = {key: value for key, value in child.items() if key not in _NOT_IN_JUNCTORS}
            if checks:
                branch_properties[name] = checks
        branches.append({"required": converted.get("required", []), "properties": branch_properties})
    description = " or ".join(option.get("title", "") for option in options)
    return {**_plain(outer), "type": "object", "description": outer.get("description", description),
            "properties": properties, "oneOf": branches}  # fmt: skip


def spec_schema() -> dict[str, Any]:
    schema = ExperimentSpec.model_json_schema(by_alias=True)
    result = structural(schema, schema.get("$defs", {}))
    result["description"] = (
        "The runtime sections of 'interposer ctl MOUNTPOINT set' (faults, throttle, crash), applied to the "
        "selected pods' volumes while the resource is active."
    )
    result["x-kubernetes-validations"] = [
        {"rule": SPEC_SECTIONS_REQUIRED, "message": "at least one of faults, throttle, crash is required"}
    ]
    return result


def status_schema() -> dict[str, Any]:
    string, integer = {"type": "string"}, {"type": "integer", "format": "int64"}
    target = {
        "type": "object",
        "description": "One targeted volume, written by the node plugin of its node.",
        "properties": {
            "pod": string,
            "volume": {"type": "string", "description": "The pod's name for the volume (pod.spec.volumes[].name)."},
            "volumeId": string,
            "node": string,
            "phase": {"type": "string", "enum": list(PHASES)},
            "generation": {**integer, "description": "The resource's generation the phase is about."},
            "sections": {"type": "array", "items": string, "description": "This resource's sections in effect."},
            "overriddenBy": {
                "type": "object",
                "additionalProperties": string,
                "description": "Sections this resource sets that a later resource overrides: section → resource.",
            },
            "message": string,
            "lastChange": {"type": "string", "format": "date-time"},
        },
        "required": ["pod", "node", "phase", "generation"],
    }
    condition = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": list(CONDITIONS)},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": string,
            "message": string,
            "observedGeneration": integer,
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
        "required": ["type", "status"],
    }
    return {
        "type": "object",
        "properties": {
            "targets": {
                "type": "object",
                "description": "Targeted volumes by '<pod>/<volume>'; each node plugin writes its own.",
                "additionalProperties": target,
            },
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def crd() -> dict[str, Any]:
    def condition_column(kind: str) -> dict[str, str]:
        path = f'.status.conditions[?(@.type=="{kind}")].status'
        return {"name": kind, "type": "string", "jsonPath": path}

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": list(SHORT_NAMES)},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
                        {"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
                        condition_column("Applied"),
                        condition_column("Expired"),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{API_VERSION} {KIND}: faults, throttle and crash settings for the "
                            "volumes of the pods it selects, applied live by the node plugins (docs/faults.md).",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = f"# Generated by {COMMAND} from interposer.csi.experiment.ExperimentSpec: do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
