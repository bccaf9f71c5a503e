"""Bridge endpoints from devices, users and groups (Kazoo's kazoo_endpoint).

A device becomes one endpoint ``{"Invite-Format": "contact", "To-User": <sip username>,
"To-Realm": <account realm>, ...}`` that the calls shard resolves to the device's registered
contacts; a user becomes every enabled device it owns; a group, its members.
"""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call
from actors.callflow.lookup import ensure_type_index
from store.kazoo import is_soft_deleted

__all__ = ["device_endpoints", "endpoints_for", "group_endpoints", "user_endpoints"]


def device_endpoints(call: Call, device_id: str, *, timeout: float, delay: float = 0,
                     can_call_self: bool = False, owner_check: bool = True) -> list[dict[str, Any]]:
    device = call.open_doc(device_id)
    if device is None or device.get("pvt_type") != "device" or is_soft_deleted(device):
        return []
    if device.get("enabled") is False:
        return []
    if not can_call_self and device_id == call.ccvs.get("Authorizing-ID"):
        return []
    username = (device.get("sip") or {}).get("username")
    if not username:
        return []
    ccvs = {
        "Account-ID": call.account_id,
        "Authorizing-ID": device_id,
        "Authorizing-Type": "device",
    }
    if device.get("owner_id"):
        ccvs["Owner-ID"] = device["owner_id"]
    return [{
        "Invite-Format": "contact",
        "To-User": str(username),
        "To-Realm": call.realm,
        "Endpoint-Timeout": int(timeout),
        "Endpoint-Delay": int(delay),
        "Custom-Channel-Vars": ccvs,
    }]


def user_endpoints(call: Call, user_id: str, *, timeout: float, delay: float = 0,
                   can_call_self: bool = False) -> list[dict[str, Any]]:
    user = call.open_doc(user_id)
    if user is None or user.get("enabled") is False or is_soft_deleted(user):
        return []
    found: list[dict[str, Any]] = []
    ensure_type_index(call.store, call.account_db)
    devices = call.store.find_all(call.account_db, {"pvt_type": "device", "owner_id": user_id})
    for device in sorted(devices, key=lambda d: str(d.get("_id"))):
        found.extend(device_endpoints(call, str(device["_id"]), timeout=timeout, delay=delay,
                                      can_call_self=can_call_self))
    return found


def group_endpoints(call: Call, group_id: str, *, timeout: float, delay: float = 0) -> list[dict[str, Any]]:
    group = call.open_doc(group_id)
    if group is None:
        return []
    found: list[dict[str, Any]] = []
    members = group.get("endpoints") or {}
    for member_id, member in members.items():
        kind = (member or {}).get("type", "device")
        found.extend(endpoints_for(call, kind, member_id, timeout=timeout, delay=delay))
    return found


def endpoints_for(call: Call, kind: str, doc_id: str, *, timeout: float,
                  delay: float = 0) -> list[dict[str, Any]]:
    if kind == "device":
        return device_endpoints(call, doc_id, timeout=timeout, delay=delay)
    if kind == "user":
        return user_endpoints(call, doc_id, timeout=timeout, delay=delay)
    if kind == "group":
        return group_endpoints(call, doc_id, timeout=timeout, delay=delay)
    return []
