"""The document schemas the API validates writes with, and their OpenAPI form.

The store's schemas (``store/schemas/*.json``) are the source of truth; the API reuses them as
they are. Groups and conferences have no store schema yet, so theirs live here, written the same
way (draft 2020-12, ``$ref`` into the store's ``definitions.json``) and validated with the same
error shape: ``{"field.path": {"rule": {"message": ...}}}``.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from store import schemas as store_schemas

__all__ = ["apply_defaults", "document_schema", "openapi_components", "schema_ref", "validate"]

_LOCAL_NAMES = ("groups", "conferences")


@cache
def _local_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for name in _LOCAL_NAMES:
        text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
        out[name] = json.loads(text)
    return out


def document_schema(name: str) -> dict[str, Any]:
    """A copy of the document schema ``name`` (store's or local)."""
    local = _local_schemas().get(name)
    if local is not None:
        return copy.deepcopy(local)
    return store_schemas.load_schema(name)


@cache
def _local_validator(name: str) -> Draft202012Validator:
    store_docs = [store_schemas.load_schema(n) for n in [*store_schemas.schema_names(), "definitions"]]
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in [*store_docs, *_local_schemas().values()]
    )
    return Draft202012Validator(
        _local_schemas()[name], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _path(parts: Any) -> str:
    return ".".join(str(part) for part in parts)


def _local_errors(name: str, doc: Any) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for error in _local_validator(name).iter_errors(doc):
        rule = str(error.validator)
        base = list(error.absolute_path)
        if rule == "required" and isinstance(error.instance, dict):
            for field in error.validator_value:
                if field not in error.instance:
                    found.setdefault(_path([*base, field]), {})["required"] = {
                        "message": "Field is required but missing"
                    }
            continue
        detail: dict[str, Any] = {"message": error.message}
        if rule in ("minLength", "maxLength", "minimum", "maximum", "enum", "pattern", "type"):
            detail["target"] = error.validator_value
        found.setdefault(_path(base), {})[rule] = detail
    return found


def validate(name: str, doc: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Field errors of ``doc`` against schema ``name``; ``{}`` when valid."""
    if name in _LOCAL_NAMES:
        return _local_errors(name, doc)
    return store_schemas.validate(name, doc)


def _fill_defaults(schema: dict[str, Any], doc: Any, resolve: Any) -> None:
    if not isinstance(doc, dict):
        return
    for prop, sub in schema.get("properties", {}).items():
        sub = resolve(sub)
        if prop not in doc and isinstance(sub, dict) and "default" in sub:
            doc[prop] = copy.deepcopy(sub["default"])
        if prop in doc and isinstance(sub, dict):
            _fill_defaults(sub, doc[prop], resolve)


def apply_defaults(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with the schema's defaults where fields are absent."""
    if name not in _LOCAL_NAMES:
        return store_schemas.apply_defaults(name, doc)
    schema = _local_schemas()[name]
    defs = schema.get("$defs", {})

    def resolve(sub: Any) -> Any:
        ref = sub.get("$ref") if isinstance(sub, dict) else None
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return defs.get(ref.rsplit("/", 1)[1], sub)
        return sub

    out = copy.deepcopy(doc)
    _fill_defaults(schema, out, resolve)
    return out


# -- OpenAPI -----------------------------------------------------------------------------------


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _rewrite_refs(node: Any, owner: str) -> Any:
    """Point ``$ref``s at ``#/components/schemas/...`` so the schemas sit in one OpenAPI file."""
    if isinstance(node, list):
        return [_rewrite_refs(item, owner) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            target, _, fragment = value.partition("#")
            doc = target[: -len(".json")] if target.endswith(".json") else owner
            local = fragment.rsplit("/", 1)[1] if fragment.startswith("/$defs/") else None
            out[key] = f"#/components/schemas/{doc}" + (f"__{local}" if local else "")
        elif key in ("$schema", "$id", "$defs"):
            continue
        elif key == "allOf" and isinstance(value, list):
            # if/then conditions (a callflow action's data checked by its module's schema)
            # stay out of the OpenAPI document: test generators cannot build examples through
            # them inside a recursive schema. The API still applies them; the data schemas
            # themselves are listed as components (callflows__data_<module>).
            kept = [_rewrite_refs(item, owner) for item in value
                    if not (isinstance(item, dict) and "if" in item)]
            if kept:
                out[key] = kept
        else:
            out[key] = _rewrite_refs(value, owner)
    return out


def openapi_components(names: list[str]) -> dict[str, dict[str, Any]]:
    """``components.schemas`` for the document schemas ``names`` and every definition they use."""
    out: dict[str, dict[str, Any]] = {}
    sources = {name: document_schema(name) for name in names}
    sources["definitions"] = store_schemas.load_schema("definitions")
    for name, schema in sources.items():
        for local, sub in schema.get("$defs", {}).items():
            out[f"{name}__{local}"] = _rewrite_refs(sub, name)
        if name != "definitions":
            out[name] = _rewrite_refs(schema, name)
    return out
