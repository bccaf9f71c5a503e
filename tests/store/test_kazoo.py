"""Kazoo naming and private-field helpers (no store needed)."""

from __future__ import annotations

import re
import time

import pytest

from store import BadRequest
from store.kazoo import (
    GREGORIAN_OFFSET,
    account_db_name,
    account_id_from_db,
    db_classification,
    encode_db_name,
    gregorian_now,
    is_account_id,
    is_soft_deleted,
    modb_doc_id,
    modb_name,
    new_account_id,
    parse_modb,
    public_fields,
    set_pvt_fields,
    soft_delete,
    touch,
)

ACCOUNT = "0123456789abcdef0123456789abcdef"


def test_account_ids_and_names() -> None:
    assert is_account_id(new_account_id()) and not is_account_id("0123") and not is_account_id(ACCOUNT.upper())
    assert account_db_name(ACCOUNT) == "account/01/23/456789abcdef0123456789abcdef"
    for form in (ACCOUNT, "account/01/23/456789abcdef0123456789abcdef",
                 "account%2F01%2F23%2F456789abcdef0123456789abcdef",
                 "account%2f01%2f23%2f456789abcdef0123456789abcdef"):
        assert account_id_from_db(form) == ACCOUNT
        assert account_db_name(form) == "account/01/23/456789abcdef0123456789abcdef"
    assert encode_db_name("numbers/+1415") == "numbers%2F%2B1415"
    with pytest.raises(BadRequest):
        account_id_from_db("accounts")
    with pytest.raises(BadRequest):
        account_db_name("not-an-account")


def test_month_databases() -> None:
    assert modb_name(ACCOUNT, 2026, 1) == "account/01/23/456789abcdef0123456789abcdef-202601"
    assert parse_modb("account%2F01%2F23%2F456789abcdef0123456789abcdef-202612") == (ACCOUNT, 2026, 12)
    current = time.gmtime()
    assert modb_name(ACCOUNT).endswith(f"-{current.tm_year:04d}{current.tm_mon:02d}")
    assert re.fullmatch(r"202603-[0-9a-f]{32}", modb_doc_id(2026, 3))
    with pytest.raises(BadRequest):
        modb_name(ACCOUNT, 2026, 13)
    with pytest.raises(BadRequest):
        parse_modb(account_db_name(ACCOUNT))


def test_classification() -> None:
    assert db_classification(account_db_name(ACCOUNT)) == "account"
    assert db_classification(modb_name(ACCOUNT, 2026, 5)) == "modb"
    assert db_classification(account_db_name(ACCOUNT) + "-2026") == "yodb"
    assert db_classification("numbers%2F%2B1415") == "numbers"
    assert db_classification("accounts") == "aggregate"
    assert db_classification("system_config") == "system"
    assert db_classification("somebody_elses") == "external"


def test_private_fields() -> None:
    now = gregorian_now()
    assert abs(now - (int(time.time()) + GREGORIAN_OFFSET)) <= 1
    doc = set_pvt_fields({"_id": "d1", "_rev": "1-x", "name": "phone"}, "device", ACCOUNT, now=100)
    assert doc["pvt_type"] == "device" and doc["pvt_vsn"] == "1"
    assert doc["pvt_created"] == doc["pvt_modified"] == 100
    assert doc["pvt_account_id"] == ACCOUNT and doc["pvt_account_db"] == encode_db_name(account_db_name(ACCOUNT))
    later = set_pvt_fields(doc, "device", ACCOUNT, now=200)
    assert later["pvt_created"] == 100 and later["pvt_modified"] == 200
    assert touch(later, now=300)["pvt_modified"] == 300
    gone = soft_delete(later, now=400)
    assert is_soft_deleted(gone) and not is_soft_deleted(later) and gone["pvt_modified"] == 400
    assert public_fields(gone) == {"name": "phone", "id": "d1"}
