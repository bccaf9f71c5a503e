"""``menu``: an IVR (Kazoo's cf_menu). ``data.id`` is a ``menu`` document of the account:

- ``media.greeting`` (a media id) is played, any key stopping it; the keys pressed are then
  collected: ``timeout`` (10000 ms) for the first, ``interdigit_timeout`` (the action's, else
  the menu's, else 2000 ms) between the next, at most ``max_extension_length`` (4);
- digits naming a child (children are keyed by digit strings) take that branch; the
  collection stops as soon as the digits name a child no longer key starts with, so "1"
  goes at once when there is no "11";
- with ``hunt`` (default true) digits that are an extension of the account (a callflow number,
  allowed by ``hunt_allow`` / not refused by ``hunt_deny``) jump to that callflow after
  ``media.transfer_media`` (default menu-transferring_call);
- anything else plays ``media.invalid_media`` (default menu-invalid_entry; false: nothing)
  and counts a try; silence takes the ``"timeout"`` child when the tree has one, else counts
  a try too;
- after ``retries`` (3) tries, ``media.exit_media`` (default menu-exit) and the
  ``"max_retries"`` child, else ``"_"``, else the call is hung up.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from actors.callflow.call import ALL_DTMF, Call
from actors.callflow.lookup import ensure_type_index, match_number
from actors.callflow.media import media_name, prompt
from store.kazoo import is_soft_deleted

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.menu")

TIMEOUT_KEY = "timeout"
MAX_RETRIES_KEY = "max_retries"


@dataclass
class _Menu:
    retries: int
    timeout_ms: int
    interdigit_ms: int
    max_length: int
    greeting: str | None
    invalid: str | None
    exit: str | None
    transfer: str | None
    hunt: bool
    hunt_allow: str | None
    hunt_deny: str | None


def _optional_media(call: Call, value: Any, default: str) -> str | None:
    """Kazoo's media fields: true/missing -> the default prompt, false -> none, else a media."""
    if value is False:
        return None
    if value is None or value is True or value == "":
        return prompt(default)
    return media_name(call.account_id, value)


def _load(call: Call, data: dict[str, Any], doc: dict[str, Any]) -> _Menu:
    media = doc.get("media") or {}
    return _Menu(
        retries=max(1, int(doc.get("retries") or 3)),
        timeout_ms=int(doc.get("timeout") or 10000),
        interdigit_ms=int(data.get("interdigit_timeout") or doc.get("interdigit_timeout") or 2000),
        max_length=max(1, int(doc.get("max_extension_length") or 4)),
        greeting=media_name(call.account_id, media.get("greeting")),
        invalid=_optional_media(call, media.get("invalid_media"), "menu-invalid_entry"),
        exit=_optional_media(call, media.get("exit_media"), "menu-exit"),
        transfer=_optional_media(call, media.get("transfer_media"), "menu-transferring_call"),
        hunt=doc.get("hunt") is not False,
        hunt_allow=doc.get("hunt_allow") or None,
        hunt_deny=doc.get("hunt_deny") or None,
    )


def _digit_keys(children: dict[str, Any]) -> list[str]:
    return [k for k in children if k and all(c in ALL_DTMF for c in k)]


def _collect(call: Call, menu: _Menu, keys: list[str]) -> tuple[str, bool]:
    """(digits, timed out): one key at a time, so a complete choice goes at once; keys
    pressed in between wait in the shard."""
    terminators = [] if "#" in keys else ["#"]
    first = call.collect_digits(1, timeout_ms=menu.timeout_ms, interdigit_ms=menu.interdigit_ms,
                                terminators=terminators)
    if not first.digits:
        if first.terminator:
            return first.terminator, False  # "#" alone: an entry, an invalid one
        return "", True
    digits = first.digits
    while len(digits) < menu.max_length:
        longer = any(k != digits and k.startswith(digits) for k in keys)
        if digits in keys and not longer:
            break
        if not longer and not menu.hunt:
            break  # nothing can follow: invalid at once
        more = call.collect_digits(1, timeout_ms=menu.interdigit_ms,
                                   interdigit_ms=menu.interdigit_ms, terminators=terminators)
        if not more.digits:
            break
        digits += more.digits
    return digits, False


def _hunt(call: Call, menu: _Menu, digits: str) -> dict[str, Any] | None:
    """The flow of the account's callflow for ``digits`` when the menu lets callers dial
    extensions (Kazoo's hunt)."""
    if not menu.hunt or not digits.isdigit():
        return None
    try:
        if menu.hunt_allow and not re.search(menu.hunt_allow, digits):
            return None
        if menu.hunt_deny and re.search(menu.hunt_deny, digits):
            return None
    except re.error:
        return None
    ensure_type_index(call.store, call.account_db)
    callflows = [d for d in call.store.find_all(call.account_db, {"pvt_type": "callflow"})
                 if not is_soft_deleted(d)]
    # Exact numbers only: a menu is no way around the account's no_match.
    found = match_number([c for c in callflows if digits in (c.get("numbers") or [])],
                         digits, False)
    if found is None or not isinstance(found.callflow.get("flow"), dict):
        return None
    flow: dict[str, Any] = found.callflow["flow"]
    return flow


def handle(data: dict[str, Any], call: Call) -> str | dict[str, Any] | None:
    doc = call.open_doc(str(data.get("id") or ""))
    if doc is None or is_soft_deleted(doc):
        log.warning("menu %s not found", data.get("id"))
        return "_"
    menu = _load(call, data, doc)
    children = call.children
    keys = _digit_keys(children)
    call.answer()
    for attempt in range(1, menu.retries + 1):
        if menu.greeting is not None:
            call.play(menu.greeting, ALL_DTMF)
        digits, timed_out = _collect(call, menu, keys)
        if timed_out:
            if TIMEOUT_KEY in children:
                log.info("menu: no entry, taking the timeout branch")
                return TIMEOUT_KEY
            log.info("menu: no entry (try %d of %d)", attempt, menu.retries)
            continue
        if digits in keys:
            log.info("menu: entry %s", digits)
            return digits
        flow = _hunt(call, menu, digits)
        if flow is not None:
            log.info("menu: dialing extension %s", digits)
            if menu.transfer is not None:
                call.play(menu.transfer)
            return flow
        log.info("menu: invalid entry (try %d of %d)", attempt, menu.retries)
        if menu.invalid is not None:
            # Fresh keys for the next try: what was pressed after the bad entry goes.
            call.play(menu.invalid)
            call.flush_dtmf()
    log.info("menu: out of retries")
    if menu.exit is not None:
        call.play(menu.exit)
    if MAX_RETRIES_KEY in children or "_" in children:
        return MAX_RETRIES_KEY
    call.hangup()
    return None
