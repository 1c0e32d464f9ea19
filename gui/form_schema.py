"""A plugin's Params JSON schema read as a flat list of form fields (Qt-free).

Why apart from the widgets: the schema rules (``$ref``/``anyOf`` resolution, bounds, enums,
decimals) are plain data work that tests can check without a window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class FieldSpec:
    """What the form needs to know about one field, read from the JSON schema."""

    name: str
    title: str
    kind: str                  # int | float | bool | enum | list | path | text | json
    default: Any = None
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    item_kind: str = "text"    # for lists: int | float | text
    nullable: bool = False
    path_mode: str = "file"    # file | directory | save


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        return {**schema.get("$defs", {}).get(name, {}), **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node and len(node["allOf"]) == 1:
        return {**_resolve(schema, node["allOf"][0]), **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def parse_schema(schema: dict[str, Any]) -> list[FieldSpec]:
    """Fields in declaration order; unknown shapes fall back to a JSON line edit."""
    out: list[FieldSpec] = []
    for name, raw in schema.get("properties", {}).items():
        node = _resolve(schema, raw)
        nullable = False
        if "anyOf" in node:
            options = [_resolve(schema, o) for o in node["anyOf"]]
            non_null = [o for o in options if o.get("type") != "null"]
            nullable = len(non_null) < len(options)
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**non_null[0], **merged} if len(non_null) == 1 else {**merged, "type": "json"}
        extra_ui = str(node.get("ui") or node.get("widget") or "").lower()
        fmt = str(node.get("format") or "")
        typ = node.get("type")
        spec = FieldSpec(name=name, title=node.get("title") or name.replace("_", " ").capitalize(), kind="text",
                         default=raw.get("default", node.get("default")), description=node.get("description", ""),
                         nullable=nullable)
        if "enum" in node or "const" in node:
            spec.kind = "enum"
            spec.choices = list(node["enum"]) if "enum" in node else [node["const"]]
        elif typ == "boolean":
            spec.kind = "bool"
        elif typ in ("integer", "number"):
            spec.kind = "int" if typ == "integer" else "float"
            step = 1 if typ == "integer" else 0.0
            if "minimum" in node:
                spec.minimum = node["minimum"]
            elif "exclusiveMinimum" in node:
                spec.minimum = node["exclusiveMinimum"] + step
            if "maximum" in node:
                spec.maximum = node["maximum"]
            elif "exclusiveMaximum" in node:
                spec.maximum = node["exclusiveMaximum"] - step
        elif typ == "array":
            spec.kind = "list"
            items = _resolve(schema, node.get("items", {}))
            spec.item_kind = {"integer": "int", "number": "float"}.get(items.get("type", ""), "text")
        elif extra_ui in ("path", "file", "directory", "dir", "save") or fmt in ("path", "file-path", "directory-path"):
            spec.kind = "path"
            spec.path_mode = ("directory" if extra_ui in ("directory", "dir") or fmt == "directory-path"
                              else "save" if extra_ui == "save" else "file")
        elif typ == "string":
            spec.kind = "text"
        else:
            spec.kind = "json"
        out.append(spec)
    return out


def decimals_for(*values: Any) -> int:
    d = 3
    for v in values:
        if isinstance(v, float) and v != 0:
            text = f"{abs(v):.10f}".rstrip("0")
            if "." in text:
                d = max(d, len(text.split(".")[1]))
    return min(d, 8)
