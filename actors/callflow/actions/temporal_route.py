"""``temporal_route``: branch on the first of ``rules`` (temporal_rules documents) that matches
now in ``timezone`` (else the account's, else UTC); ``"_"`` when none matches.

A rule: ``cycle`` date|daily|weekly|monthly|yearly, ``interval`` (every n-th cycle from
``start_date``), ``wdays`` (monday..sunday), ``days`` (days of the month), ``ordinal``
(first..fifth, last, every) with ``wdays`` for monthly/yearly, ``month``, and the time window
``time_window_start``/``time_window_stop`` in seconds of the day. ``enabled: true`` forces a
match, ``false`` never matches (Kazoo's overrides).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actors.callflow.call import Call

__all__ = ["handle", "rule_matches"]

GREGORIAN_OFFSET = 62167219200
WDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}


def _zone(name: str | None) -> dt.tzinfo:
    try:
        return ZoneInfo(name) if name else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _ordinal_ok(ordinal: str, wdays: list[str], day: dt.date) -> bool:
    if WDAYS[day.weekday()] not in wdays:
        return False
    if ordinal == "every":
        return True
    if ordinal == "last":
        return (day + dt.timedelta(days=7)).month != day.month
    return (day.day - 1) // 7 + 1 == ORDINALS.get(ordinal, 0)


def rule_matches(rule: dict[str, Any], now: dt.datetime) -> bool:
    if rule.get("enabled") is True:
        return True
    if rule.get("enabled") is False:
        return False
    seconds = now.hour * 3600 + now.minute * 60 + now.second
    start = int(rule.get("time_window_start") or 0)
    stop = int(rule.get("time_window_stop") or 86400)
    if not start <= seconds < stop:
        return False
    today = now.date()
    start_date = today
    if rule.get("start_date"):
        start_date = dt.datetime.fromtimestamp(int(rule["start_date"]) - GREGORIAN_OFFSET,
                                               now.tzinfo).date()
        if today < start_date:
            return False
    interval = max(1, int(rule.get("interval") or 1))
    wdays = [str(w).lower() for w in rule.get("wdays") or []]
    days = [int(d) for d in rule.get("days") or []]
    ordinal = str(rule.get("ordinal") or "every")
    cycle = rule.get("cycle")
    if cycle == "date":
        return today == start_date
    if cycle == "daily":
        return (today - start_date).days % interval == 0
    if cycle == "weekly":
        weeks = ((today - start_date).days // 7)
        return WDAYS[today.weekday()] in wdays and weeks % interval == 0
    if cycle == "monthly":
        months = (today.year - start_date.year) * 12 + today.month - start_date.month
        if months % interval:
            return False
        return today.day in days if days else _ordinal_ok(ordinal, wdays, today)
    if cycle == "yearly":
        if rule.get("month") and int(rule["month"]) != today.month:
            return False
        if (today.year - start_date.year) % interval:
            return False
        return today.day in days if days else _ordinal_ok(ordinal, wdays, today)
    return False


def handle(data: dict[str, Any], call: Call) -> str | None:
    zone = _zone(data.get("timezone") or call.account.get("timezone"))
    now = dt.datetime.now(zone)
    for rule_id in data.get("rules") or []:
        rule = call.open_doc(str(rule_id))
        if rule is not None and rule_matches(rule, now):
            return str(rule_id)
    return "_"
