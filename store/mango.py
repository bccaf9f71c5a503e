"""Mango (CouchDB ``_find``) selectors, CouchDB's JSON collation and bookmark encoding.

The embedded backend evaluates selectors here; both backends share the validation so a selector
that one backend rejects is rejected by the other too.

Collation follows CouchDB's view collation by type (null < false < true < numbers < strings <
arrays < objects). Strings compare by code point, not by ICU as CouchDB does: the two orders agree
for ASCII text of one case, which is what ids, numbers and Kazoo's keys are.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from store.errors import BadRequest

__all__ = [
    "MISSING",
    "SortSpec",
    "collation_key",
    "decode_bookmark",
    "encode_bookmark",
    "get_field",
    "matches",
    "normalize_sort",
    "project",
    "split_field",
    "sql_prefilter",
    "validate_selector",
]


class _Missing:
    """Marks a field that is absent, which Mango treats differently from ``null``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

SortSpec = list[tuple[str, str]]

_COMBINATION_OPERATORS = {"$and", "$or", "$nor", "$not"}
_FIELD_OPERATORS = {
    "$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$exists", "$type",
    "$regex", "$size", "$mod", "$all", "$elemMatch", "$allMatch", "$not",
}
_TYPE_NAMES = {"null", "boolean", "number", "string", "array", "object"}


def split_field(field: str) -> list[str]:
    """Split a dotted Mango field path; ``\\.`` keeps a literal dot inside a name."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in field:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def get_field(doc: Any, path: Sequence[str]) -> Any:
    value = doc
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def collation_key(value: Any) -> tuple[Any, ...]:
    """A sortable key that orders JSON values the way CouchDB's view collation does."""
    if value is None:
        return (0,)
    if value is False:
        return (1,)
    if value is True:
        return (2,)
    if isinstance(value, (int, float)):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    if isinstance(value, list):
        return (5, tuple(collation_key(item) for item in value))
    if isinstance(value, dict):
        return (6, tuple((key, collation_key(item)) for key, item in value.items()))
    raise BadRequest(f"not a JSON value: {type(value).__name__}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def validate_selector(selector: Any) -> None:
    """Raise BadRequest for anything CouchDB would refuse as a selector."""
    if not isinstance(selector, dict):
        raise BadRequest("selector must be a JSON object")
    for key, cond in selector.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(cond, list) or not cond and key != "$and":
                raise BadRequest(f"{key} needs a non-empty array of selectors")
            for sub in cond:
                validate_selector(sub)
        elif key == "$not":
            validate_selector(cond)
        elif key.startswith("$"):
            raise BadRequest(f"invalid operator: {key}")
        else:
            _validate_condition(key, cond)


def _validate_condition(field: str, cond: Any) -> None:
    if not isinstance(cond, dict):
        return
    for op, arg in cond.items():
        if not op.startswith("$"):
            _validate_condition(f"{field}.{op}", arg)
            continue
        if op not in _FIELD_OPERATORS:
            raise BadRequest(f"invalid operator: {op}")
        if op in ("$in", "$nin", "$all") and not isinstance(arg, list):
            raise BadRequest(f"{op} needs an array")
        if op == "$exists" and not isinstance(arg, bool):
            raise BadRequest("$exists needs a boolean")
        if op == "$type" and arg not in _TYPE_NAMES:
            raise BadRequest(f"$type must be one of {sorted(_TYPE_NAMES)}")
        if op == "$regex":
            if not isinstance(arg, str):
                raise BadRequest("$regex needs a string")
            _compile(arg)
        if op == "$size" and (not isinstance(arg, int) or isinstance(arg, bool)):
            raise BadRequest("$size needs an integer")
        if op == "$mod" and not (
            isinstance(arg, list) and len(arg) == 2 and all(isinstance(n, int) for n in arg) and arg[0] != 0
        ):
            raise BadRequest("$mod needs [divisor, remainder] with a non-zero divisor")
        if op in ("$elemMatch", "$allMatch"):
            # Conditions on the element itself (`{"$eq": 1}`) or on its fields.
            if _is_operator_object(arg):
                _validate_condition(field, arg)
            else:
                validate_selector(arg)
        if op == "$not":
            if not isinstance(arg, dict):
                raise BadRequest("$not needs an object")
            _validate_condition(field, arg)


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadRequest(f"invalid $regex {pattern!r}: {exc}") from exc


def matches(selector: dict[str, Any], doc: Any) -> bool:
    """True when ``doc`` satisfies the Mango ``selector`` (validated beforehand)."""
    for key, cond in selector.items():
        if key == "$and":
            if not all(matches(sub, doc) for sub in cond):
                return False
        elif key == "$or":
            if not any(matches(sub, doc) for sub in cond):
                return False
        elif key == "$nor":
            if any(matches(sub, doc) for sub in cond):
                return False
        elif key == "$not":
            if matches(cond, doc):
                return False
        elif not _match_field(get_field(doc, split_field(key)), cond):
            return False
    return True


def _is_operator_object(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(key.startswith("$") for key in cond)


def _match_field(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and not _is_operator_object(cond):
        if not cond:
            # `{"field": {}}` is equality with the empty object.
            return value is not MISSING and value == {}
        # A nested object of conditions is the same as dotted paths below this field.
        for sub_key, sub_cond in cond.items():
            if sub_key.startswith("$"):
                if not _match_operator(value, sub_key, sub_cond):
                    return False
            elif not _match_field(get_field(value, split_field(sub_key)), sub_cond):
                return False
        return True
    if not isinstance(cond, dict):
        return _match_operator(value, "$eq", cond)
    return all(_match_operator(value, op, arg) for op, arg in cond.items())


def _cmp(left: Any, right: Any) -> int:
    a, b = collation_key(left), collation_key(right)
    return (a > b) - (a < b)


def _match_operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (value is not MISSING) == arg
    if value is MISSING:
        # Mango: an absent field matches nothing but `$exists: false`.
        return op == "$not" and not _match_field(value, arg)
    if op == "$eq":
        return _cmp(value, arg) == 0
    if op == "$ne":
        return _cmp(value, arg) != 0
    if op == "$lt":
        return _cmp(value, arg) < 0
    if op == "$lte":
        return _cmp(value, arg) <= 0
    if op == "$gt":
        return _cmp(value, arg) > 0
    if op == "$gte":
        return _cmp(value, arg) >= 0
    if op == "$in":
        candidates = value if isinstance(value, list) else [value]
        return any(_cmp(item, choice) == 0 for item in candidates for choice in arg)
    if op == "$nin":
        candidates = value if isinstance(value, list) else [value]
        return not any(_cmp(item, choice) == 0 for item in candidates for choice in arg)
    if op == "$type":
        return _json_type(value) == arg
    if op == "$regex":
        return isinstance(value, str) and _compile(arg).search(value) is not None
    if op == "$size":
        return isinstance(value, list) and len(value) == arg
    if op == "$mod":
        return isinstance(value, int) and not isinstance(value, bool) and value % arg[0] == arg[1]
    if op == "$all":
        return isinstance(value, list) and all(
            any(_cmp(item, wanted) == 0 for item in value) for wanted in arg
        )
    if op == "$elemMatch":
        return isinstance(value, list) and any(_element_matches(arg, item) for item in value)
    if op == "$allMatch":
        return isinstance(value, list) and bool(value) and all(_element_matches(arg, item) for item in value)
    if op == "$not":
        return not _match_field(value, arg)
    raise BadRequest(f"invalid operator: {op}")


def _element_matches(selector: dict[str, Any], item: Any) -> bool:
    # `$elemMatch` conditions may address the element itself (`{"$eq": 1}`) or its fields.
    if _is_operator_object(selector):
        return _match_field(item, selector)
    return matches(selector, item)


def normalize_sort(sort: Sequence[str | dict[str, str]] | None) -> SortSpec:
    """CouchDB's sort syntax (``["a", {"b": "desc"}]``) as ``[(field, "asc"|"desc")]``."""
    spec: SortSpec = []
    for item in sort or []:
        if isinstance(item, str):
            spec.append((item, "asc"))
        elif isinstance(item, dict) and len(item) == 1:
            field, direction = next(iter(item.items()))
            if direction not in ("asc", "desc"):
                raise BadRequest(f"sort direction must be asc or desc, not {direction!r}")
            spec.append((field, direction))
        else:
            raise BadRequest(f"invalid sort item: {item!r}")
    if len({direction for _, direction in spec}) > 1:
        # CouchDB reads one index in one direction, so it refuses mixed directions.
        raise BadRequest("all sort fields must use the same direction")
    return spec


def project(doc: dict[str, Any], fields: Iterable[str] | None) -> dict[str, Any]:
    """Keep only ``fields`` (dotted paths allowed), like ``_find``'s ``fields``."""
    if fields is None:
        return doc
    out: dict[str, Any] = {}
    for field in fields:
        path = split_field(field)
        value = get_field(doc, path)
        if value is MISSING:
            continue
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return out


def encode_bookmark(payload: Any) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_bookmark(bookmark: str) -> Any:
    try:
        padded = bookmark + "=" * (-len(bookmark) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"invalid bookmark {bookmark!r}") from exc


def _json_path(field: str) -> str:
    return "$" + "".join("." + json.dumps(part) for part in split_field(field))


def sql_prefilter(selector: dict[str, Any], column: str = "body") -> tuple[list[str], list[Any]]:
    """SQL conditions over ``json_extract`` that keep a superset of the matching rows.

    Only top-level conditions that SQLite can test without changing the answer are translated;
    the caller still runs ``matches`` on every row, so what is left out only costs speed.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for key, cond in selector.items():
        if key == "$and":
            for sub in cond:
                sub_clauses, sub_params = sql_prefilter(sub, column)
                clauses += sub_clauses
                params += sub_params
            continue
        if key.startswith("$"):
            continue
        path = _json_path(key)
        ops = cond if _is_operator_object(cond) else None if isinstance(cond, dict) else {"$eq": cond}
        if ops is None:
            continue
        for op, arg in ops.items():
            clause = _sql_condition(column, path, op, arg, params)
            if clause:
                clauses.append(clause)
    return clauses, params


def _sql_scalar(arg: Any) -> bool:
    return isinstance(arg, (str, int, float)) and not isinstance(arg, bool)


def _sql_condition(column: str, path: str, op: str, arg: Any, params: list[Any]) -> str | None:
    extract = f"json_extract({column}, ?)"
    jtype = f"json_type({column}, ?)"
    if op == "$exists":
        params.append(path)
        return f"{jtype} IS {'NOT ' if arg else ''}NULL"
    if op == "$eq" and _sql_scalar(arg):
        params += [path, arg]
        return f"{extract} = ?"
    if op == "$in" and arg and all(_sql_scalar(item) for item in arg):
        params += [path, path, *arg]
        marks = ",".join("?" for _ in arg)
        return f"({jtype} = 'array' OR {extract} IN ({marks}))"
    if op in ("$gt", "$gte", "$lt", "$lte") and _sql_scalar(arg):
        sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
        kinds = "'text'" if isinstance(arg, str) else "'integer','real'"
        params += [path, path, path, arg]
        # Values of another JSON type are left to `matches`, which applies the collation.
        return f"({jtype} IS NOT NULL AND ({jtype} NOT IN ({kinds}) OR {extract} {sql_op} ?))"
    return None


