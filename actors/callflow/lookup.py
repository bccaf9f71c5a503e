"""Dialed number -> callflow (Kazoo's cf_flow / cf_route_req).

1. exact: a callflow whose ``numbers`` holds the number;
2. patterns: every ``patterns`` regex of the account, the *longest match* wins; named groups
   become ``capture_groups``, the first group (or the whole match) ``capture_group``;
3. ``no_match``: only when the number is all digits (optionally a leading ``+``) and the caller
   is authorized (an endpoint of the account, never a carrier ``resource``): toll-fraud guard.

The account's callflows are read once and kept for ``ttl`` seconds (Kazoo caches lookups and
flushes them on document changes; a short life keeps edits visible without a feed).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from store import NotFound, Store
from store.kazoo import account_db_name, is_soft_deleted

__all__ = ["CallflowCache", "FlowMatch", "ensure_type_index", "is_authorized_caller", "match_number"]

_NO_MATCH_NUMBER = re.compile(r"^\+?\d+$")
AUTHORIZED_TYPES = frozenset({"device", "user", "mobile", "account", "sys_info_local"})


@dataclass(frozen=True)
class FlowMatch:
    callflow: dict[str, Any]
    capture_group: str | None = None
    capture_groups: dict[str, str] = field(default_factory=dict)
    no_match: bool = False


def is_authorized_caller(ccvs: dict[str, Any]) -> bool:
    return str(ccvs.get("Authorizing-Type") or "") in AUTHORIZED_TYPES and bool(
        ccvs.get("Authorizing-ID"))


def match_number(callflows: list[dict[str, Any]], number: str, authorized: bool) -> FlowMatch | None:
    for doc in callflows:
        if number in (doc.get("numbers") or []):
            return FlowMatch(doc)
    best: tuple[int, dict[str, Any], re.Match[str]] | None = None
    for doc in callflows:
        for pattern in doc.get("patterns") or []:
            try:
                found = re.search(pattern, number)
            except re.error:
                continue
            if found is None:
                continue
            length = found.end() - found.start()
            if best is None or length > best[0]:
                best = (length, doc, found)
    if best is not None:
        _, doc, found = best
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        first = next((g for g in found.groups() if g is not None), None)
        return FlowMatch(doc, first if first is not None else found.group(0), groups)
    if authorized and _NO_MATCH_NUMBER.match(number):
        for doc in callflows:
            if "no_match" in (doc.get("numbers") or []):
                return FlowMatch(doc, number, no_match=True)
    return None


_indexed: set[str] = set()


def ensure_type_index(store: Store, db: str) -> None:
    """An index on ``pvt_type`` (Kazoo's per-type views). Lookups by type need it: without
    one, pouchdb-server answers a ``pvt_type`` selector from another index that starts with
    ``pvt_type`` (the registrar's ``[pvt_type, sip.username]``) and misses every document
    lacking that index's other fields."""
    if db not in _indexed:
        store.create_index(db, ["pvt_type"], name="by_pvt_type")
        _indexed.add(db)


class CallflowCache:
    def __init__(self, store: Store, ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self._by_account: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def callflows(self, account_id: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._by_account.get(account_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        db = account_db_name(account_id)
        try:
            ensure_type_index(self.store, db)
            docs = [d for d in self.store.find_all(db, {"pvt_type": "callflow"})
                    if not is_soft_deleted(d)]
        except NotFound:
            docs = []
        self._by_account[account_id] = (now, docs)
        return docs

    def by_id(self, account_id: str, callflow_id: str) -> dict[str, Any] | None:
        for doc in self.callflows(account_id):
            if doc.get("_id") == callflow_id:
                return doc
        try:
            return self.store.get(account_db_name(account_id), callflow_id)
        except NotFound:
            return None
