"""JSON Schemas of the core documents and Kazoo-shaped validation errors."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from store import ValidationFailed
from store.schemas import apply_defaults, check, load_schema, schema_names, validate

CORE = ["accounts", "callflows", "cdrs", "devices", "media", "menus", "temporal_rules", "users", "vmboxes", "webhooks"]

VALID: dict[str, dict[str, Any]] = {
    "accounts": {"name": "Acme", "realm": "acme.example.com", "timezone": "Europe/Paris",
                 "caller_id": {"external": {"name": "Acme", "number": "+33140000000"}},
                 "call_restriction": {"international": {"action": "deny"}}},
    "users": {"first_name": "Alice", "last_name": "Liddell", "username": "alice", "email": "alice@acme.example.com",
              "priv_level": "admin", "hotdesk": {"enabled": True, "pin": "1234"}},
    "devices": {"name": "Alice desk", "device_type": "sip_device", "owner_id": "0123456789abcdef0123456789abcdef",
                "sip": {"username": "alice100", "password": "s3cr3tpw", "realm": "acme.example.com",
                        "invite_format": "contact", "expire_seconds": 300},
                "media": {"audio": {"codecs": ["PCMU", "PCMA"]}},
                "caller_id": {"internal": {"name": "Alice", "number": "100"}},
                "call_forward": {"enabled": True, "number": "+15555550100", "require_keypress": False}},
    "callflows": {"name": "Main", "numbers": ["100", "+15555550100"], "patterns": ["^\\+1(\\d{10})$"],
                  "flow": {"module": "device", "data": {"id": "0123456789abcdef0123456789abcdef", "timeout": 20},
                           "children": {"_": {"module": "voicemail", "data": {"id": "abc"}, "children": {}}}}},
    "vmboxes": {"mailbox": "100", "name": "Alice VM", "pin": "0000", "owner_id": "0123456789abcdef0123456789abcdef",
                "notify_email_addresses": ["alice@acme.example.com"]},
    "media": {"name": "Greeting", "media_source": "upload", "content_type": "audio/mpeg"},
    "menus": {"name": "Main IVR", "retries": 3, "max_extension_length": 4, "media": {"greeting": "abc"}},
    "temporal_rules": {"name": "Office hours", "cycle": "weekly", "wdays": ["monday", "friday"],
                       "time_window_start": 32400, "time_window_stop": 61200},
    "webhooks": {"name": "CDR hook", "uri": "https://hooks.example.com/cdr", "hook": "channel_destroy",
                 "http_verb": "post", "custom_data": {"team": "ops"}},
    "cdrs": {"call_id": "abc@host", "call_direction": "inbound", "duration_seconds": 42, "billing_seconds": 30,
             "hangup_cause": "NORMAL_CLEARING", "timestamp": 63900000000},
}

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("devices", {"sip": {"username": "alice"}}, "name", "required"),
    ("devices", {"name": "d", "sip": {"username": "a"}}, "sip.username", "minLength"),
    ("devices", {"name": "d", "sip": {"invite_format": "carrier-pigeon"}}, "sip.invite_format", "enum"),
    ("devices", {"name": "d", "media": {"audio": {"codecs": ["PCMU", "MP3"]}}}, "media.audio.codecs.1", "enum"),
    ("devices", {"name": "d", "owner_id": "not-an-id"}, "owner_id", "pattern"),
    ("devices", {"name": "d", "enabled": "yes"}, "enabled", "type"),
    ("callflows", {"flow": {"module": "device"}}, "flow.data", "required"),
    ("callflows", {"flow": {"module": "device", "data": {}, "children": {"_": {"data": {}}}}},
     "flow.children._.module", "required"),
    ("callflows", {"numbers": ["1" * 40]}, "numbers.0", "maxLength"),
    ("callflows", {"patterns": ["^(unclosed"]}, "patterns.0", "format"),
    ("vmboxes", {"mailbox": "100"}, "name", "required"),
    ("vmboxes", {"mailbox": "100", "name": "vm", "pin": "12ab"}, "pin", "pattern"),
    ("media", {"name": "m", "media_source": "carrier"}, "media_source", "enum"),
    ("menus", {"name": "ivr", "retries": 50}, "retries", "maximum"),
    ("temporal_rules", {"name": "t", "cycle": "hourly"}, "cycle", "enum"),
    ("temporal_rules", {"name": "t"}, "cycle", "required"),
    ("webhooks", {"name": "w", "hook": "all", "uri": "ftp://x"}, "uri", "pattern"),
    ("cdrs", {"duration_seconds": 3}, "call_id", "required"),
    ("accounts", {"name": "a", "realm": "ab"}, "realm", "minLength"),
    ("users", {"first_name": "a", "last_name": "b", "priv_level": "root"}, "priv_level", "enum"),
    ("users", {"first_name": "a", "last_name": "b", "email": "not an email"}, "email", "format"),
]


def test_every_core_schema_is_a_valid_2020_12_schema() -> None:
    assert set(CORE) <= set(schema_names())
    for name in CORE:
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        assert schema["properties"], name


@pytest.mark.parametrize("name", CORE)
def test_valid_documents_pass(name: str) -> None:
    assert validate(name, VALID[name]) == {}


@pytest.mark.parametrize(("name", "doc", "field", "rule"), INVALID)
def test_invalid_documents_name_the_field_and_rule(name: str, doc: dict[str, Any], field: str, rule: str) -> None:
    errors = validate(name, doc)
    assert field in errors, errors
    assert rule in errors[field], errors
    assert errors[field][rule]["message"]


def test_error_shape_is_kazoos() -> None:
    errors = validate("devices", {"sip": {"username": "a", "password": "pw"}})
    assert errors == {
        "name": {"required": {"message": "Field is required but missing"}},
        "sip.username": {"minLength": {"message": "String must be at least 2 characters", "target": 2}},
        "sip.password": {"minLength": {"message": "String must be at least 5 characters", "target": 5}},
    }


def test_defaults_and_check() -> None:
    device = apply_defaults("devices", {"name": "d", "sip": {"username": "alice"}})
    assert device["enabled"] is True
    assert device["sip"]["invite_format"] == "contact" and device["sip"]["expire_seconds"] == 300
    assert device["mwi_unsolicited_updates"] is True
    assert apply_defaults("vmboxes", {"mailbox": "1", "name": "v"})["seek_duration_ms"] == 10000
    with pytest.raises(ValidationFailed) as exc:
        check("webhooks", {"name": "w"})
    assert set(exc.value.errors) == {"uri", "hook"}
    assert exc.value.error_id == "validation_failed"
    assert check("webhooks", VALID["webhooks"])["retries"] == 2


@pytest.mark.parametrize(
    ("flow", "field", "rule"),
    [
        ({"module": "device", "data": {}}, "flow.data.id", "required"),
        ({"module": "menu", "data": {"id": 7}}, "flow.data.id", "type"),
        ({"module": "ring_group", "data": {"endpoints": [{"endpoint_type": "device"}]}},
         "flow.data.endpoints.0.id", "required"),
        ({"module": "record_call", "data": {"action": "pause"}}, "flow.data.action", "enum"),
        ({"module": "collect_dtmf", "data": {"terminators": ["x"]}}, "flow.data.terminators.0",
         "enum"),
        ({"module": "answer", "data": {}, "children": {
            "_": {"module": "voicemail", "data": {"action": "listen"}}}},
         "flow.children._.data.action", "enum"),
    ],
)
def test_callflow_action_data_is_checked_by_its_module(flow: dict[str, Any], field: str,
                                                       rule: str) -> None:
    """Each known action's data has a schema of its own (Kazoo's callflows.<module>), at any
    depth of the tree; an action mirliton does not know keeps free-form data."""
    errors = validate("callflows", {"numbers": ["100"], "flow": flow})
    assert rule in errors.get(field, {}), errors
    assert validate("callflows", {"numbers": ["100"], "flow": {
        "module": "some_future_action", "data": {"anything": [1, 2]}}}) == {}
