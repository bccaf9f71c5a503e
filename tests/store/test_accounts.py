"""Account creation: account database, aggregate copy, unique realm, system account, admin user."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirliton.cli_account import account as account_cli
from store import Store, ValidationFailed, open_store
from store.accounts import create_account, master_account_id, verify_password
from store.kazoo import ACCOUNTS_DB, account_db_name, encode_db_name, public_fields


def _unique_realm(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}.example.com"


def test_create_account_writes_everything(store: Store) -> None:
    realm = _unique_realm("acme")
    result = create_account(store, "Acme", realm, "Admin", "correct horse", email="admin@acme.example.com")
    account_id = result["account_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", account_id)
    db = account_db_name(account_id)
    assert result["account_db"] == db and store.db_exists(db)
    assert db in store.list_dbs(prefix="account/")

    doc = store.get(db, account_id)
    assert doc["name"] == "Acme" and doc["realm"] == realm and doc["enabled"] is True
    assert doc["pvt_type"] == "account" and doc["pvt_account_id"] == account_id
    assert doc["pvt_account_db"] == encode_db_name(db)
    assert doc["pvt_tree"] == [] and re.fullmatch(r"[0-9a-f]{64}", doc["pvt_api_key"])
    assert isinstance(doc["pvt_created"], int) and doc["pvt_created"] > 63_000_000_000  # Gregorian seconds
    aggregate = store.get(ACCOUNTS_DB, account_id)
    assert {k: v for k, v in aggregate.items() if k != "_rev"} == {k: v for k, v in doc.items() if k != "_rev"}
    assert doc["pvt_superduper_admin"] is (master_account_id(store) == account_id)

    (user,) = store.find(db, {"pvt_type": "user"}).docs
    assert user["_id"] == result["user_id"] and user["username"] == "admin" and user["priv_level"] == "admin"
    assert user["pvt_md5_auth"] == hashlib.md5(b"admin:correct horse").hexdigest()
    assert user["pvt_sha1_auth"] == hashlib.sha1(b"admin:correct horse").hexdigest()
    assert user["pvt_password_hash"].startswith("$argon2id$")
    assert verify_password(user, "correct horse") and not verify_password(user, "wrong")
    assert "correct horse" not in json.dumps(user)
    assert not any(key.startswith("pvt_") for key in public_fields(user))


def test_first_account_is_the_system_account(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    first = create_account(store, "System", "sys.example.com", "root", "pw-root-1")
    second = create_account(store, "Reseller", "reseller.example.com", "admin", "pw-admin-1")
    child = create_account(store, "Customer", "customer.example.com", "admin", "pw-admin-2",
                           parent_id=second["account_id"])
    assert first["superduper_admin"] and not second["superduper_admin"] and not child["superduper_admin"]
    assert master_account_id(store) == first["account_id"]
    assert store.get(ACCOUNTS_DB, first["account_id"])["pvt_superduper_admin"] is True
    assert store.get(ACCOUNTS_DB, second["account_id"])["pvt_superduper_admin"] is False
    assert store.get(ACCOUNTS_DB, child["account_id"])["pvt_tree"] == [second["account_id"]]
    store.close()


def test_realm_is_unique(store: Store) -> None:
    realm = _unique_realm("dupe")
    create_account(store, "One", realm, "admin", "pw-one-1")
    with pytest.raises(ValidationFailed) as exc:
        create_account(store, "Two", realm.upper(), "admin", "pw-two-2")
    assert exc.value.errors == {"realm": {"unique": {"message": "Realm already in use", "cause": realm}}}


def test_concurrent_creations_with_one_realm(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        try:
            create_account(store, f"Racer {n}", "race.example.com", "admin", "pw-race-1")
            outcomes.append("created")
        except ValidationFailed as exc:
            outcomes.append("unique" if "realm" in exc.errors else "other")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "unique", "unique", "unique"]
    accounts = store.find(ACCOUNTS_DB, {"pvt_type": "account"}).docs
    assert [a["realm"] for a in accounts] == ["race.example.com"]
    store.close()


def test_invalid_input_names_the_fields(store: Store) -> None:
    with pytest.raises(ValidationFailed) as exc:
        create_account(store, "", "ab", "", "")
    assert {"name", "realm", "username", "password"} <= set(exc.value.errors)
    with pytest.raises(ValidationFailed) as exc:
        create_account(store, "Orphan", _unique_realm("orphan"), "admin", "pw-orphan", parent_id="f" * 32)
    assert "parent_id" in exc.value.errors


@pytest.mark.couchdb
def test_cli_account_create_against_couchdb(couchdb_url: str, tmp_path: Path) -> None:
    realm = _unique_realm("cli")
    runner = CliRunner()
    result = runner.invoke(
        account_cli,
        ["create", "--data-dir", str(tmp_path), "--name", "CLI Co", "--realm", realm,
         "--username", "boss", "--password", "pw-boss-1", "--json"],
        env={"MIRLITON_STORE__URL": couchdb_url},
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.output.strip().splitlines()[-1])
    account_id = created["account_id"]

    store = open_store(couchdb_url, tmp_path)
    try:
        db = account_db_name(account_id)
        assert store.db_exists(ACCOUNTS_DB) and store.db_exists(db)
        assert db in store.list_dbs(prefix="account/")
        assert store.get(ACCOUNTS_DB, account_id)["realm"] == realm
        assert store.get(db, account_id)["name"] == "CLI Co"
    finally:
        store.close()

    again = runner.invoke(
        account_cli,
        ["create", "--data-dir", str(tmp_path), "--name", "Copy", "--realm", realm,
         "--username", "boss", "--password", "pw-boss-1", "--json"],
        env={"MIRLITON_STORE__URL": couchdb_url},
    )
    assert again.exit_code == 1
    assert json.loads(again.output.strip().splitlines()[-1])["errors"]["realm"]["unique"]


def test_stale_realm_claim_of_a_crashed_creation_is_taken_over(tmp_path: Path) -> None:
    from store.kazoo import gregorian_now, set_pvt_fields

    store = open_store("embedded", tmp_path)
    store.create_db(ACCOUNTS_DB)
    crashed = "c" * 32  # its account document was never written
    old = gregorian_now() - 3600
    store.put(ACCOUNTS_DB, set_pvt_fields({"_id": "realm:old.example.com", "realm": "old.example.com"},
                                          "realm_claim", crashed, now=old))
    created = create_account(store, "Phoenix", "old.example.com", "admin", "pw-phoenix")
    assert store.get(ACCOUNTS_DB, "realm:old.example.com")["pvt_account_id"] == created["account_id"]

    # A recent claim may be a creation in progress: it is respected.
    store.put(ACCOUNTS_DB, set_pvt_fields({"_id": "realm:busy.example.com", "realm": "busy.example.com"},
                                          "realm_claim", crashed))
    with pytest.raises(ValidationFailed):
        create_account(store, "Busy", "busy.example.com", "admin", "pw-busy-1")
    store.close()
