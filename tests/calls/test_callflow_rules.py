"""The pure parts of the callflow app: number matching (Kazoo's cf_flow) and temporal rules
(cf_temporal_route), and the SIP code <-> hangup cause tables."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from actors.callflow.actions.temporal_route import GREGORIAN_OFFSET, rule_matches
from actors.callflow.lookup import is_authorized_caller, match_number
from actors.calls.causes import cause_for_status, status_for_cause

FLOWS = [
    {"_id": "exact", "numbers": ["1001", "+15551234567"]},
    {"_id": "short", "patterns": [r"^9"]},
    {"_id": "long", "patterns": [r"^9(?P<dest>\d{4})$"]},
    {"_id": "feature", "patterns": [r"^\*72(\d*)$"]},
    {"_id": "offnet", "numbers": ["no_match"]},
]


def test_exact_number_first() -> None:
    assert match_number(FLOWS, "1001", True).callflow["_id"] == "exact"  # type: ignore[union-attr]
    assert match_number(FLOWS, "+15551234567", False).callflow["_id"] == "exact"  # type: ignore[union-attr]


def test_longest_pattern_wins_with_capture_groups() -> None:
    found = match_number(FLOWS, "91234", True)
    assert found is not None and found.callflow["_id"] == "long"
    assert found.capture_group == "1234"
    assert found.capture_groups == {"dest": "1234"}
    short = match_number(FLOWS, "912", True)
    assert short is not None and short.callflow["_id"] == "short"
    feature = match_number(FLOWS, "*72100", True)
    assert feature is not None and feature.capture_group == "100"


def test_no_match_only_for_authorized_callers_and_digits() -> None:
    found = match_number(FLOWS, "+4930123456", True)
    assert found is not None and found.no_match and found.callflow["_id"] == "offnet"
    assert match_number(FLOWS, "+4930123456", False) is None  # a carrier call: no toll fraud
    assert match_number(FLOWS, "alice", True) is None  # not a number
    assert is_authorized_caller({"Authorizing-Type": "device", "Authorizing-ID": "d1"})
    assert not is_authorized_caller({"Authorizing-Type": "resource", "Authorizing-ID": "r1"})
    assert not is_authorized_caller({})


PARIS = ZoneInfo("Europe/Paris")
# Wednesday 2026-11-04, 10:30 in Paris
WEDNESDAY = dt.datetime(2026, 11, 4, 10, 30, tzinfo=PARIS)


def _gregorian(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=PARIS).timestamp()) + GREGORIAN_OFFSET


def test_weekly_office_hours() -> None:
    office = {"cycle": "weekly", "wdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
              "time_window_start": 9 * 3600, "time_window_stop": 17 * 3600}
    assert rule_matches(office, WEDNESDAY)
    assert not rule_matches(office, WEDNESDAY.replace(hour=18))
    assert not rule_matches(office, WEDNESDAY + dt.timedelta(days=3))  # Saturday


def test_every_other_week_from_the_start_date() -> None:
    rule = {"cycle": "weekly", "interval": 2, "wdays": ["wednesday"],
            "start_date": _gregorian(dt.date(2026, 10, 21))}
    assert rule_matches(rule, WEDNESDAY)  # two weeks after the start
    assert not rule_matches(rule, WEDNESDAY + dt.timedelta(days=7))


def test_monthly_ordinal_yearly_and_date() -> None:
    first_wednesday = {"cycle": "monthly", "ordinal": "first", "wdays": ["wednesday"]}
    assert rule_matches(first_wednesday, WEDNESDAY)
    assert not rule_matches(first_wednesday, WEDNESDAY + dt.timedelta(days=7))
    last_monday = {"cycle": "monthly", "ordinal": "last", "wdays": ["monday"]}
    assert rule_matches(last_monday, dt.datetime(2026, 11, 30, 12, tzinfo=PARIS))
    assert not rule_matches(last_monday, dt.datetime(2026, 11, 23, 12, tzinfo=PARIS))
    christmas = {"cycle": "yearly", "month": 12, "days": [25]}
    assert rule_matches(christmas, dt.datetime(2027, 12, 25, 8, tzinfo=PARIS))
    assert not rule_matches(christmas, WEDNESDAY)
    one_day = {"cycle": "date", "start_date": _gregorian(dt.date(2026, 11, 4))}
    assert rule_matches(one_day, WEDNESDAY)
    assert not rule_matches(one_day, WEDNESDAY + dt.timedelta(days=1))


def test_enabled_overrides() -> None:
    assert rule_matches({"enabled": True, "cycle": "weekly", "wdays": []}, WEDNESDAY)
    assert not rule_matches({"enabled": False, "cycle": "daily"}, WEDNESDAY)


def test_hangup_causes_of_sip_codes_and_back() -> None:
    assert cause_for_status(486) == "USER_BUSY"
    assert cause_for_status(480) == "NO_USER_RESPONSE"
    assert cause_for_status(408) == "RECOVERY_ON_TIMER_EXPIRE"
    assert cause_for_status(487) == "ORIGINATOR_CANCEL"
    assert cause_for_status(404) == "UNALLOCATED_NUMBER"
    assert cause_for_status(200) == "NORMAL_CLEARING"
    assert status_for_cause("USER_BUSY") == 486
    assert status_for_cause("NO_ANSWER") == 480
    assert status_for_cause("ORIGINATOR_CANCEL") == 487
    assert status_for_cause("SOMETHING_ELSE") == 480
