"""Regenerate ``openai_responses.schema.json`` from OpenAI's published OpenAPI document.

Usage (from the repository root)::

    python tests/schemas/build_openai_responses_schema.py /path/to/openai-openapi [commit]

The first argument is a clone of https://github.com/openai/openai-openapi (a
bare repository works: the file is read with ``git show``); the commit
defaults to ``HEAD`` and is recorded in the output. Only the closure of the
schemas the Responses API's answers use is kept (:data:`ROOTS`), as one JSON
Schema (Draft 2020-12) with the components under ``$defs``.

OpenAPI specifics become plain JSON Schema:

- ``nullable: true`` (OpenAPI 3.0) becomes ``anyOf: [<schema>, {"type": "null"}]``;
- a ``discriminator`` on a ``oneOf``/``anyOf`` whose variants each require the
  property with fixed values becomes a dispatch on that property (``if``/``then``
  per value, and an ``enum`` of the known values), so a wrong ``type`` is
  named and a variant's own errors are reported; other discriminated unions
  become ``anyOf`` (OpenAPI picks one variant by the property, where ``oneOf``
  would refuse a value that two overlapping variants accept);
- ``$recursiveRef``/``$recursiveAnchor`` (Draft 2019-09) become a ``$ref`` to
  the enclosing component;
- descriptions, titles, examples and ``x-*`` vendor keys are dropped (they do
  not validate anything, and they were two thirds of the size).

The Responses API's ``DELETE`` has no body schema in the document (its 200
says only "OK"); the API reference's example body is declared here as
``ResponseDeleted`` (marked with a ``$comment``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOTS = ("Response", "ResponseStreamEvent", "ResponseItemList", "ItemResource", "OutputItem", "InputItem", "Error", "ErrorResponse")
OUT = Path(__file__).with_name("openai_responses.schema.json")
_PREFIX = "#/components/schemas/"
_DROPPED = {"description", "title", "example", "examples", "deprecated"}

RESPONSE_DELETED = {
    "$comment": "Not in the OpenAPI document (its DELETE /responses/{id} 200 has no body schema): the API reference's example body.",
    "type": "object",
    "properties": {"id": {"type": "string"}, "object": {"enum": ["response"]}, "deleted": {"const": True}},
    "required": ["id", "object", "deleted"],
}


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_PREFIX):
                found.add(value[len(_PREFIX) :])
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            found: set[str] = set()
            _refs(schemas[name], found)
            todo.extend(found)
    return sorted(seen)


class _Converter:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def _target(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return self._target(self.schemas[ref[len(_PREFIX) :]]) if isinstance(ref, str) else node

    def tag_values(self, node: dict[str, Any], prop: str) -> list[Any] | None:
        """The values ``prop`` must take in ``node`` (required, fixed), or None if it need not be there or is free."""
        node = self._target(node)
        for key in ("oneOf", "anyOf"):
            if key in node and "properties" not in node:
                values: list[Any] = []
                for variant in node[key]:
                    found = self.tag_values(variant, prop)
                    if found is None:
                        return None
                    values.extend(found)
                return values
        for part in node.get("allOf", []):
            found = self.tag_values(part, prop)
            if found is not None:
                return found
        schema = node.get("properties", {}).get(prop)
        if schema is None or prop not in node.get("required", []):
            return None
        if "const" in schema:
            return [schema["const"]]
        return list(schema["enum"]) if "enum" in schema else None

    def convert(self, node: Any, component: str) -> Any:
        if isinstance(node, list):
            return [self.convert(value, component) for value in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED or key.startswith("x-") or key in ("discriminator", "nullable", "$recursiveAnchor"):
                continue
            if key == "$ref":
                out["$ref"] = "#/$defs/" + value[len(_PREFIX) :]
            elif key == "$recursiveRef":
                out["$ref"] = "#/$defs/" + component
            elif key == "properties":
                out[key] = {name: self.convert(schema, component) for name, schema in value.items()}
            else:
                out[key] = self.convert(value, component)
        discriminator = node.get("discriminator")
        if discriminator is not None:
            out = self._dispatch(node, out, discriminator["propertyName"])
        if node.get("nullable") is True:
            out = {"anyOf": [out, {"type": "null"}]}
        return out

    def _dispatch(self, node: dict[str, Any], out: dict[str, Any], prop: str) -> dict[str, Any]:
        key = "oneOf" if "oneOf" in node else "anyOf"
        if key not in node:  # misplaced (one sits on an array schema): nothing to dispatch
            return out
        variants, converted = node[key], out.pop(key)
        tags = [self.tag_values(variant, prop) for variant in variants]
        if any(values is None for values in tags):
            out["anyOf"] = converted
            return out
        known = [value for values in tags for value in values or []]
        out.setdefault("type", "object")
        out["required"] = sorted({*out.get("required", []), prop})
        out["properties"] = {**out.get("properties", {}), prop: {"enum": known}}
        out["allOf"] = [
            *out.get("allOf", []),
            *({"if": {"properties": {prop: {"enum": values}}}, "then": schema} for values, schema in zip(tags, converted, strict=True)),
        ]
        return out


def build(spec: dict[str, Any], source: str) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    converter = _Converter(schemas)
    defs = {name: converter.convert(schemas[name], name) for name in closure(schemas, ROOTS)}
    defs["ResponseDeleted"] = RESPONSE_DELETED
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://toolrelay.invalid/schemas/openai_responses.schema.json",
        "$comment": source,
        "$defs": defs,
    }


def main(argv: list[str]) -> None:
    repo, commit = argv[1], argv[2] if len(argv) > 2 else "HEAD"
    sha = subprocess.run(["git", "-C", repo, "rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
    text = subprocess.run(["git", "-C", repo, "show", f"{sha}:openapi.json"], check=True, capture_output=True, text=True).stdout
    spec = json.loads(text)
    source = (
        f"Generated by tests/schemas/build_openai_responses_schema.py from openai/openai-openapi openapi.json "
        f"(OpenAPI {spec['openapi']}, API {spec['info']['version']}) at commit {sha}; MIT licence, see tests/schemas/README.md."
    )
    OUT.write_text(json.dumps(build(spec, source), indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv)
