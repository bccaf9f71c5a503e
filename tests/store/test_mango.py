"""The embedded Mango evaluator follows CouchDB's mango_selector semantics, negations included."""

from __future__ import annotations

from typing import Any

import pytest

from store import BadRequest
from store.mango import matches, validate_selector

DOCS: dict[str, dict[str, Any]] = {
    "missing": {"_id": "missing"},
    "null": {"_id": "null", "a": None},
    "one": {"_id": "one", "a": 1},
    "two": {"_id": "two", "a": 2},
    "text": {"_id": "text", "a": "x"},
    "list": {"_id": "list", "a": [1, 3]},
    "empty": {"_id": "empty", "a": []},
    "neg": {"_id": "neg", "a": -7},
}


def selected(selector: dict[str, Any]) -> list[str]:
    validate_selector(selector)
    return sorted(doc_id for doc_id, doc in DOCS.items() if matches(selector, doc))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        # An absent field satisfies nothing but $exists: false, negations included.
        ({"a": {"$ne": 1}}, ["empty", "list", "neg", "null", "text", "two"]),
        ({"a": {"$nin": [1, 2]}}, ["empty", "neg", "null", "text"]),
        ({"a": {"$exists": False}}, ["missing"]),
        ({"a": {"$not": {"$eq": 1}}}, ["empty", "list", "neg", "null", "text", "two"]),
        # $not is pushed down (De Morgan): not(a != 1) is a == 1, which needs "a".
        ({"$not": {"a": {"$ne": 1}}}, ["one"]),
        ({"$not": {"a": {"$gt": 1}}}, ["neg", "null", "one"]),
        ({"$not": {"a": {"$exists": True}}}, ["missing"]),
        ({"$not": {"$or": [{"a": 1}, {"a": 2}]}}, ["empty", "list", "neg", "null", "text"]),
        ({"$nor": [{"a": {"$lt": 2}}, {"a": "x"}]}, ["empty", "list", "two"]),
        ({"$not": {"a": {"$regex": "x"}}}, ["empty", "list", "neg", "null", "one", "two"]),
        # Arrays: $in/$nin look at the elements, $eq at the whole value.
        ({"a": {"$in": [3]}}, ["list"]),
        ({"a": 3}, []),
        ({"a": [1, 3]}, ["list"]),
        ({"a": {"$all": [[1, 3]]}}, ["list"]),
        ({"a": {"$elemMatch": {"$gt": 2}}}, ["list"]),
        ({"a": {"$allMatch": {"$gt": 0}}}, ["list"]),
        # Collation across types: null < booleans < numbers < strings < arrays < objects.
        ({"a": {"$gt": 2}}, ["empty", "list", "text"]),
        ({"a": {"$lt": 0}}, ["neg", "null"]),
        # Erlang's rem keeps the dividend's sign.
        ({"a": {"$mod": [4, -3]}}, ["neg"]),
        ({"a": {"$type": "null"}}, ["null"]),
    ],
)
def test_couchdb_semantics(selector: dict[str, Any], expected: list[str]) -> None:
    assert selected(selector) == expected


@pytest.mark.parametrize(
    "selector",
    [{"a": {"$unknown": 1}}, {"$or": []}, {"$and": {}}, {"a": {"$exists": 1}}, {"a": {"$mod": [0, 1]}},
     {"a": {"$size": "2"}}, {"a": {"$type": "integer"}}, {"a": {"$regex": "["}}, {"$bogus": []}],
)
def test_invalid_selectors(selector: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        validate_selector(selector)
