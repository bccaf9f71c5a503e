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
    "compile_selector",
    "evaluate",
    "decode_bookmark",
    "encode_bookmark",
    "get_field",
    "matches",
    "normalize_sort",
    "project",
    "split_field",
    "sql_json_extract",
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
            _compile_regex(arg)
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
def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadRequest(f"invalid $regex {pattern!r}: {exc}") from exc


# -- matching ------------------------------------------------------------------------------
#
# A selector is compiled to a small tree first, the way CouchDB's mango_selector normalizes it:
# nested objects become dotted paths, several conditions on one field become an $and, and
# negations ($not, $nor) are pushed down to the fields with De Morgan's laws ($not of $lt is
# $gte, of $in is $nin, of $exists:true is $exists:false, ...). Pushed-down negations keep
# CouchDB's rule that a condition on an absent field fails (only $exists:false holds), so
# {"$not": {"a": {"$ne": 1}}} is {"a": {"$eq": 1}} and does not match documents without "a".

_NEGATED = {
    "$lt": "$gte", "$gte": "$lt", "$lte": "$gt", "$gt": "$lte",
    "$eq": "$ne", "$ne": "$eq", "$in": "$nin", "$nin": "$in",
}

# Tree nodes: ("and", [nodes]) | ("or", [nodes]) | ("op", path, operator, argument)
#           | ("not", path, node)   -- the field exists and ``node`` fails on its value
#           | ("elem", path, "$elemMatch"|"$allMatch", node)  -- ``node`` runs on each element
Node = tuple[Any, ...]


def compile_selector(selector: dict[str, Any]) -> Node:
    """The selector as a matching tree (validate it first)."""
    return _compile(selector, [])


def _compile(selector: dict[str, Any], base: list[str]) -> Node:
    parts: list[Node] = []
    for key, cond in selector.items():
        if key == "$and":
            parts.append(("and", [_compile(sub, base) for sub in cond]))
        elif key == "$or":
            parts.append(("or", [_compile(sub, base) for sub in cond]))
        elif key == "$nor":
            parts.append(_negate(("or", [_compile(sub, base) for sub in cond])))
        elif key == "$not":
            parts.append(_negate(_compile(cond, base)))
        elif key.startswith("$"):
            parts.append(_compile_condition(base, {key: cond}))
        else:
            parts.append(_compile_condition(base + split_field(key), cond))
    return parts[0] if len(parts) == 1 else ("and", parts)


def _compile_condition(path: list[str], cond: Any) -> Node:
    if not isinstance(cond, dict) or not cond:
        return ("op", path, "$eq", cond)
    parts: list[Node] = []
    for key, arg in cond.items():
        if not key.startswith("$"):
            parts.append(_compile_condition(path + split_field(key), arg))
        elif key == "$not":
            parts.append(("not", path, _compile_condition([], arg)))
        elif key in ("$elemMatch", "$allMatch"):
            inner = _compile_condition([], arg) if _is_operator_object(arg) else _compile(arg, [])
            parts.append(("elem", path, key, inner))
        elif key in ("$and", "$or", "$nor"):
            # Combinators inside a field condition apply to that field's value.
            parts.append(_compile({key: arg}, path))
        else:
            parts.append(("op", path, key, arg))
    return parts[0] if len(parts) == 1 else ("and", parts)


def _negate(node: Node) -> Node:
    kind = node[0]
    if kind == "and":
        return ("or", [_negate(child) for child in node[1]])
    if kind == "or":
        return ("and", [_negate(child) for child in node[1]])
    if kind == "not":
        # not(field exists and not X) on a field: CouchDB cancels the double negation.
        _, path, inner = node
        return _prefix(inner, path)
    if kind == "op":
        _, path, op, arg = node
        if op in _NEGATED:
            return ("op", path, _NEGATED[op], arg)
        if op == "$exists":
            return ("op", path, "$exists", not arg)
        return ("not", path, ("op", [], op, arg))
    _, path, operator, inner = node  # elem
    return ("not", path, ("elem", [], operator, inner))


def _prefix(node: Node, path: list[str]) -> Node:
    """``node`` (written against a field's value) re-rooted at ``path``."""
    kind = node[0]
    if kind in ("and", "or"):
        return (kind, [_prefix(child, path) for child in node[1]])
    return (kind, path + node[1], *node[2:])


def matches(selector: dict[str, Any], doc: Any) -> bool:
    """True when ``doc`` satisfies the Mango ``selector`` (validated beforehand)."""
    return evaluate(compile_selector(selector), doc)


def evaluate(node: Node, value: Any) -> bool:
    kind = node[0]
    if kind == "and":
        return all(evaluate(child, value) for child in node[1])
    if kind == "or":
        return any(evaluate(child, value) for child in node[1])
    field = get_field(value, node[1]) if node[1] else value
    if kind == "op":
        op, arg = node[2], node[3]
        if field is MISSING:
            # CouchDB: an absent field satisfies nothing but $exists: false.
            return op == "$exists" and arg is False
        return _match_operator(field, op, arg)
    if field is MISSING:
        return False
    if kind == "not":
        return not evaluate(node[2], field)
    # elem
    if not isinstance(field, list):
        return False
    if node[2] == "$elemMatch":
        return any(evaluate(node[3], item) for item in field)
    return bool(field) and all(evaluate(node[3], item) for item in field)


def _is_operator_object(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(key.startswith("$") for key in cond)


def _cmp(left: Any, right: Any) -> int:
    a, b = collation_key(left), collation_key(right)
    return (a > b) - (a < b)


def _match_operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$exists":
        return bool(arg)
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
        return isinstance(value, str) and _compile_regex(arg).search(value) is not None
    if op == "$size":
        return isinstance(value, list) and len(value) == arg
    if op == "$mod":
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        # Erlang's rem: the remainder takes the dividend's sign.
        remainder = abs(value) % abs(arg[0])
        return (-remainder if value < 0 else remainder) == arg[1]
    if op == "$all":
        if not isinstance(value, list):
            return False
        has_all = all(any(_cmp(item, wanted) == 0 for item in value) for wanted in arg)
        # CouchDB also accepts [[...]] meaning "the array is exactly this one".
        return has_all or (len(arg) == 1 and isinstance(arg[0], list) and arg[0] == value)
    raise BadRequest(f"invalid operator: {op}")


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


def sql_json_extract(field: str, column: str = "body") -> str:
    """``json_extract(body, '$."a"."b"')`` with the path inlined, so that SQLite can match it
    against an expression index declared with the same text."""
    literal = "'" + _json_path(field).replace("'", "''") + "'"
    return f"json_extract({column}, {literal})"


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
        ops = cond if _is_operator_object(cond) else None if isinstance(cond, dict) else {"$eq": cond}
        if ops is None:
            continue
        for op, arg in ops.items():
            clause = _sql_condition(column, key, op, arg, params)
            if clause:
                clauses.append(clause)
    return clauses, params


def _sql_scalar(arg: Any) -> bool:
    return isinstance(arg, (str, int, float)) and not isinstance(arg, bool)


def _sql_condition(column: str, field: str, op: str, arg: Any, params: list[Any]) -> str | None:
    extract = sql_json_extract(field, column)
    jtype = extract.replace("json_extract(", "json_type(", 1)
    if op == "$exists":
        return f"{jtype} IS {'NOT ' if arg else ''}NULL"
    if op == "$eq" and _sql_scalar(arg):
        params.append(arg)
        return f"{extract} = ?"
    if op == "$in" and arg and all(_sql_scalar(item) for item in arg):
        params += list(arg)
        marks = ",".join("?" for _ in arg)
        return f"({jtype} = 'array' OR {extract} IN ({marks}))"
    if op in ("$gt", "$gte", "$lt", "$lte") and _sql_scalar(arg):
        sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
        kinds = "'text'" if isinstance(arg, str) else "'integer','real'"
        params.append(arg)
        # Values of another JSON type are left to `matches`, which applies the collation.
        return f"({jtype} IS NOT NULL AND ({jtype} NOT IN ({kinds}) OR {extract} {sql_op} ?))"
    return None
