"""JSON Schemas (draft 2020-12) of the core documents, and validation with Kazoo's error shape.

``validate("devices", doc)`` returns ``{}`` for a valid document, otherwise errors keyed by the
dotted field path, then by the failed rule, as Crossbar answers a 400:
``{"sip.username": {"minLength": {"message": "String must be at least 2 characters", "target": 2}}}``.
The same files will feed the REST API's validation and its OpenAPI document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from store.errors import BadRequest, ValidationFailed

__all__ = [
    "apply_defaults",
    "check",
    "load_schema",
    "schema_names",
    "validate",
]

_DEFINITIONS = "definitions"


def _schema_files() -> Iterator[tuple[str, str]]:
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            yield entry.name[: -len(".json")], entry.read_text(encoding="utf-8")


@cache
def _all_schemas() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in _schema_files()}


def schema_names() -> list[str]:
    """The document schemas (the shared ``definitions`` file is not one)."""
    return sorted(name for name in _all_schemas() if name != _DEFINITIONS)


def load_schema(name: str) -> dict[str, Any]:
    """A copy of the schema ``name`` (e.g. "devices"); BadRequest if there is none."""
    try:
        return copy.deepcopy(_all_schemas()[name])
    except KeyError:
        raise BadRequest(f"no schema named {name!r}") from None


@cache
def _registry() -> Registry:
    resources_by_id = [
        (schema["$id"], Resource.from_contents(schema)) for schema in _all_schemas().values()
    ]
    return Registry().with_resources(resources_by_id)


def _with_defaults(validator_class: Any) -> Any:
    """A validator class that also fills in ``default`` values of absent properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)


@cache
def _validator(name: str, fill_defaults: bool = False) -> Any:
    schema = _all_schemas().get(name)
    if schema is None or name == _DEFINITIONS:
        raise BadRequest(f"no schema named {name!r}")
    cls = _DefaultingValidator if fill_defaults else Draft202012Validator
    return cls(schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _path(parts: Any) -> str:
    return ".".join(str(part) for part in parts)


def _message(error: ValidationError) -> dict[str, Any]:
    rule, target = str(error.validator), error.validator_value
    templates = {
        "minLength": "String must be at least {target} characters",
        "maxLength": "String must not be more than {target} characters",
        "minimum": "Value must be at least {target}",
        "maximum": "Value must be at most {target}",
        "exclusiveMinimum": "Value must be greater than {target}",
        "exclusiveMaximum": "Value must be less than {target}",
        "enum": "Value not found in enumerated list of values",
        "const": "Value must be {target!r}",
        "type": "Value did not match type(s): {types}",
        "pattern": "Failed to match pattern '{target}'",
        "format": "Value is not a valid {target}",
        "uniqueItems": "Values must be unique",
        "minItems": "The list must have at least {target} items",
        "maxItems": "The list must not have more than {target} items",
    }
    types = target if isinstance(target, str) else ", ".join(map(str, target)) if isinstance(target, list) else ""
    template = templates.get(rule)
    out: dict[str, Any] = {"message": template.format(target=target, types=types) if template else error.message}
    if rule in ("minLength", "maxLength", "minimum", "maximum", "enum", "pattern", "type", "format", "minItems", "maxItems"):
        out["target"] = target
    if rule == "enum":
        out["value"] = error.instance
    return out


def _errors(validator: Any, doc: Any) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for error in validator.iter_errors(doc):
        rule = str(error.validator)
        base = list(error.absolute_path)
        if rule == "required":
            # One entry per missing field, named by its own path, as Kazoo reports it.
            for field in error.validator_value:
                if isinstance(error.instance, dict) and field not in error.instance:
                    found.setdefault(_path([*base, field]), {})["required"] = {"message": "Field is required but missing"}
            continue
        if rule == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for field in error.instance:
                if field not in allowed:
                    found.setdefault(_path([*base, field]), {})["additionalProperties"] = {"message": "Field is not allowed"}
            continue
        found.setdefault(_path(base), {})[rule] = _message(error)
    return found


def validate(name: str, doc: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Validation errors of ``doc`` against schema ``name``; ``{}`` when valid. ``doc`` is not changed."""
    return _errors(_validator(name), doc)


def apply_defaults(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with the schema's defaults filled in where fields are absent."""
    out = copy.deepcopy(doc)
    for _ in _validator(name, True).iter_errors(out):
        pass
    return out


def check(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with defaults applied, or ValidationFailed carrying the errors."""
    errors = validate(name, doc)
    if errors:
        raise ValidationFailed(errors)
    return apply_defaults(name, doc)
