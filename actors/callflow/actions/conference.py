"""``conference``: put the caller into a conference (Kazoo's cf_conference + conference app).

The conference is the ``conference`` document ``data.id`` of the account, or an ad-hoc one
(``data.config``, named by its ``name``), or the one whose ``conference_numbers`` hold the
number the caller enters (conf-enter_conf_number, 3 tries). A caller whose number is in
``moderator.numbers`` / ``member.numbers`` joins as such; otherwise, when the conference has
PINs, the caller enters one (conf-enter_conf_pin, 3 tries): a ``moderator.pins`` PIN makes a
moderator, a ``member.pins`` one a member (no member PINs: an empty entry joins as member).
``data.moderator`` forces the role. ``join_muted`` / ``join_deaf`` of the role apply. After
the welcome prompt (``welcome_prompt.play`` and the document's ``play_welcome``, default true;
``welcome_prompt.media_id``) the
shard joins the call to the mix of ``<account id>-<conference id>``; the call stays there
until it hangs up, so the executor hands off (no hangup) once joined.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import ALL_DTMF, Call
from actors.callflow.lookup import ensure_type_index
from actors.callflow.media import media_name, prompt
from store.kazoo import is_soft_deleted

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.conference")

MAX_ATTEMPTS = 3
ENTRY_TIMEOUT_MS = 10000


def _ask(call: Call, prompt_id: str, interdigit_ms: int) -> str:
    call.play(prompt(prompt_id), ALL_DTMF)
    return call.collect_digits(12, timeout_ms=ENTRY_TIMEOUT_MS, interdigit_ms=interdigit_ms,
                               terminators=("#",)).digits


def _by_number(call: Call, number: str) -> dict[str, Any] | None:
    ensure_type_index(call.store, call.account_db)
    for doc in call.store.find_all(call.account_db, {"pvt_type": "conference"}):
        if not is_soft_deleted(doc) and number in (doc.get("conference_numbers") or []):
            return doc
    return None


def _find(call: Call, data: dict[str, Any], interdigit_ms: int) -> dict[str, Any] | None:
    if data.get("id"):
        doc = call.open_doc(str(data["id"]))
        if doc is None or doc.get("pvt_type") != "conference" or is_soft_deleted(doc):
            log.warning("conference %s not found", data["id"])
            return None
        return doc
    if isinstance(data.get("config"), dict):
        config = dict(data["config"])
        config.setdefault("_id", str(config.get("name") or "adhoc"))
        return config
    for _ in range(MAX_ATTEMPTS):
        number = _ask(call, "conf-enter_conf_number", interdigit_ms)
        doc = _by_number(call, number) if number else None
        if doc is not None:
            return doc
        call.play(prompt("conf-bad_conf"))
    return None


def _role(call: Call, doc: dict[str, Any], data: dict[str, Any],
          interdigit_ms: int) -> bool | None:
    """True moderator, False member, None refused."""
    if isinstance(data.get("moderator"), bool):
        return bool(data["moderator"])
    moderator = doc.get("moderator") or {}
    member = doc.get("member") or {}
    number = call.caller_id_number
    if number and number in (moderator.get("numbers") or []):
        return True
    if number and number in (member.get("numbers") or []):
        return False
    moderator_pins = [str(p) for p in moderator.get("pins") or []]
    member_pins = [str(p) for p in member.get("pins") or []]
    if not moderator_pins and not member_pins:
        return False
    for _ in range(MAX_ATTEMPTS):
        pin = _ask(call, "conf-enter_conf_pin", interdigit_ms)
        if pin and pin in moderator_pins:
            return True
        if (pin and pin in member_pins) or (not pin and not member_pins):
            return False
        call.play(prompt("conf-bad_pin"))
    return None


def handle(data: dict[str, Any], call: Call) -> str | None:
    call.answer()
    interdigit_ms = int(data.get("interdigit_timeout") or 2000)
    doc = _find(call, data, interdigit_ms)
    if doc is None:
        return None
    moderator = _role(call, doc, data, interdigit_ms)
    if moderator is None:
        log.info("conference %s: no valid PIN", doc.get("_id"))
        return None
    welcome = data.get("welcome_prompt") or {}
    if welcome.get("play") is not False and doc.get("play_welcome") is not False:
        call.play(media_name(call.account_id, welcome.get("media_id")) or prompt("conf-welcome"))
    role = (doc.get("moderator") if moderator else doc.get("member")) or {}
    conference_id = f"{call.account_id}-{doc['_id']}"
    log.info("joining conference %s as %s", conference_id, "moderator" if moderator else "member")
    call.conference(conference_id, moderator=moderator, mute=bool(role.get("join_muted")),
                    deaf=bool(role.get("join_deaf")))
    return None
