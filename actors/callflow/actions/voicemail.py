"""``voicemail`` (Kazoo's cf_voicemail): ``data.action`` compose (default) or check, on the
``vmbox`` document ``data.id``.

compose — leave a message:
  answer; the box's greeting (``media.unavailable``; else "the person at extension <mailbox
  digits> is not available..."; none with ``skip_greeting``), "#" skips it, "*" logs in to the
  box instead (Kazoo's login key); a beep; the caller is recorded straight into the month
  database (``store://<modb>/<message id>``, attachment ``<id>.wav``) for at most
  ``max_message_length`` seconds (data, else 500), "#" ends it; then the recording becomes a
  message of the box (store/voicemail.py ``save_message``) — also when the caller hung up
  while recording: the shard stores the audio and says so (RECORD_STOP) before the call's
  destroy, so hanging up is the ordinary way to leave a message. "Message saved, goodbye" if
  the caller is still there. The box's owner calling it (``check_if_owner``) gets check.

check — the mailbox menu:
  the box is ``data.id``, else the caller's when ``callerid_match_login``, else asked for
  (vm-enter_id, 3 tries); the owner calling from their own device is let in without a PIN
  (``check_if_owner``, unless ``require_pin``), anyone else enters ``pin`` (3 tries, then
  vm-abort); a box without a PIN lets only its owner in. "You have N new messages", then the
  main menu (Kazoo's keys): 1 new messages, 2 saved messages, 5 settings, # exit. Each message:
  "message number N", the recording (any key stops it), then 1 replay, 2 save, 7 delete,
  6 or # next, 0 main menu; a new message is saved once listened to. Settings: 1 record the
  unavailable greeting (a new media document of the account, the box's
  ``media.unavailable``), 3 change the PIN, 0 back.

MWI: a message left, and each message saved, listened to or deleted in check, publishes
``mwi_update`` (bus/api/presence.py) with the box's new/saved counts to
``<sip username>@<realm>`` of every device of the box's owner (but those with
``mwi_unsolicited_updates: false``) and to ``<mailbox>@<realm>``, as Kazoo's cf_voicemail
does; the edge turns it into a NOTIFY ``message-summary`` to the registered phones. A failed
publish is logged and the call goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import ALL_DTMF, Call, Recorded
from actors.callflow.lookup import ensure_type_index
from actors.callflow.media import (
    BEEP,
    account_media,
    media_name,
    message_count_prompts,
    message_media,
    prompt,
    prompts,
    say_digits,
    say_number,
    store_destination,
)
from bus.api.presence import mwi_update
from store import NotFound, StoreError, new_doc_id
from store.kazoo import is_soft_deleted, set_pvt_fields, soft_delete, update_doc
from store.voicemail import (
    attachment_name,
    count_messages,
    delete_message,
    list_messages,
    message_db,
    mwi_users,
    new_message_id,
    save_message,
    set_folder,
)

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.voicemail")

DEFAULT_MAX_MESSAGE_LENGTH = 500  # s, Kazoo's
MAX_GREETING_LENGTH = 180  # s
MAX_LOGIN_ATTEMPTS = 3
MAX_MENU_FAILURES = 3
# Seconds of silence that end a recording: a caller who left without hanging up does not
# leave minutes of nothing.
SILENCE_HITS = 10
PIN_MAX_DIGITS = 15
MIN_PIN_LENGTH = 4
CHOICE_TIMEOUT_MS = 5000
ENTRY_TIMEOUT_MS = 10000

# Main menu, message menu and settings keys (Kazoo's #keys{} defaults, as the prompts say).
KEY_NEW, KEY_SAVED, KEY_SETTINGS, KEY_EXIT = "1", "2", "5", "#"
KEY_REPLAY, KEY_SAVE, KEY_DELETE, KEY_NEXT, KEY_MAIN = "1", "2", "7", "6", "0"
KEY_REC_GREETING, KEY_SET_PIN, KEY_RETURN = "1", "3", "0"
KEY_LOGIN, KEY_SKIP_GREETING = "*", "#"


class _Box:
    """The vmbox document and what the menus need of the call."""

    def __init__(self, call: Call, doc: dict[str, Any], data: dict[str, Any]) -> None:
        self.call = call
        self.doc = doc
        self.interdigit_ms = int(data.get("interdigit_timeout") or 2000)

    @property
    def id(self) -> str:
        return str(self.doc["_id"])

    @property
    def mailbox(self) -> str:
        return str(self.doc.get("mailbox") or "")

    def update(self, change: Any) -> None:
        """Read-modify-write of the box document (Kazoo's update_doc)."""
        def apply(doc: dict[str, Any]) -> dict[str, Any]:
            change(doc)
            return doc
        self.doc = update_doc(self.call.store, self.call.account_db, self.id, apply)


# -- prompts and keys -----------------------------------------------------------------------


def _ask(call: Call, media: list[str], max_digits: int, *, timeout_ms: int = ENTRY_TIMEOUT_MS,
         interdigit_ms: int = 2000, terminators: tuple[str, ...] = ("#",)) -> str:
    """A question: the prompt (a key stops it and counts as the first digit), then the keys."""
    call.play(media, ALL_DTMF)
    return call.collect_digits(max_digits, timeout_ms=timeout_ms, interdigit_ms=interdigit_ms,
                               terminators=terminators).digits


def _choose(call: Call, media: list[str], *, skip_prompt: bool = False) -> str:
    """One key after a menu prompt ("" when none came); ``skip_prompt`` when a key already
    stopped the previous prompt and waits in the shard."""
    if not skip_prompt:
        call.play(media, ALL_DTMF)
    collected = call.collect_digits(1, timeout_ms=CHOICE_TIMEOUT_MS,
                                    interdigit_ms=CHOICE_TIMEOUT_MS, terminators=())
    # No terminators asked for, but a shard that ended on one still said which key it was.
    return collected.digits or (collected.terminator or "")


def _invalid(call: Call) -> None:
    call.play(prompt("menu-invalid_entry"))


# -- compose ----------------------------------------------------------------------------------


def _greeting(box: _Box) -> list[str]:
    custom = media_name(box.call.account_id, (box.doc.get("media") or {}).get("unavailable"))
    if custom is not None:
        return [custom]
    return [prompt("vm-person"), *say_digits(box.mailbox), prompt("vm-not_available")]


def _is_owner(call: Call, box: _Box) -> bool:
    owner = call.ccvs.get("Owner-ID")
    return bool(owner) and owner == box.doc.get("owner_id") and box.doc.get(
        "check_if_owner") is not False


def compose(call: Call, box: _Box, data: dict[str, Any]) -> str | None:
    if _is_owner(call, box):
        log.info("the owner of box %s called it: checking it instead", box.mailbox)
        return check(call, box, data)
    call.answer()
    limit = box.doc.get("max_message_count")
    if limit and sum(count_messages(call.store, call.account_id, box.id)) >= int(limit):
        log.info("box %s is full", box.mailbox)
        call.play(prompts(["vm-mailbox_full", "vm-goodbye"]))
        return None
    if not box.doc.get("skip_greeting"):
        key = call.play(_greeting(box), (KEY_LOGIN, KEY_SKIP_GREETING))
        if key == KEY_LOGIN:
            call.flush_dtmf()
            return check(call, box, data)
    if box.doc.get("announcement_only"):
        return None
    call.flush_dtmf()  # "#" that skipped the greeting must not end the recording
    call.play(BEEP)
    message_id = new_message_id()
    db = message_db(call.account_id, message_id)
    max_length = int(data.get("max_message_length") or DEFAULT_MAX_MESSAGE_LENGTH)
    recorded = call.record(attachment_name(message_id), store_destination(db, message_id),
                           time_limit=max_length, terminators=("#",),
                           silence_hits=SILENCE_HITS)
    if not _save(call, box, message_id, recorded):
        return None
    if not call.destroyed:
        call.play(prompts(["vm-saved", "vm-goodbye"]))
    return None


def _save(call: Call, box: _Box, message_id: str, recorded: Recorded | None) -> bool:
    if recorded is None or not recorded.stored:
        log.info("no message left in box %s (%s)", box.mailbox,
                 "nothing recorded" if recorded is None else "recording too short")
        return False
    realm = call.realm
    try:
        save_message(call.store, call.account_id, box.doc, message_id,
                     caller_id_name=call.caller_id_name, caller_id_number=call.caller_id_number,
                     from_=f"{call.caller_id_number}@{realm}",
                     to=f"{call.request_number}@{realm}", call_id=call.call_id,
                     length_ms=recorded.length_ms)
    except NotFound as error:
        log.error("message %s of box %s lost: %s", message_id, box.mailbox, error)
        return False
    log.info("message %s left in box %s (%d ms)", message_id, box.mailbox, recorded.length_ms)
    publish_mwi(call, box)
    return True


# -- message-waiting indication ---------------------------------------------------------------


def publish_mwi(call: Call, box: _Box) -> None:
    """Publish the box's counts (Kazoo's cf_voicemail:update_mwi). Never raises: the lamp on a
    phone is not worth a caller's message or menu."""
    try:
        realm = call.realm
        if not realm:
            log.warning("box %s: the account has no realm, no MWI", box.mailbox)
            return
        new, saved = count_messages(call.store, call.account_id, box.id)
        for user in mwi_users(call.store, call.account_id, box.doc):
            call.bus.publish(mwi_update.build(to=f"{user}@{realm}", messages_new=new,
                                              messages_saved=saved, call_id=call.call_id))
        log.info("box %s: MWI %d new, %d saved published", box.mailbox, new, saved)
    except Exception as error:  # noqa: BLE001 - bus or store trouble must not end the call
        log.warning("box %s: MWI not published: %s", box.mailbox, error)


# -- check ------------------------------------------------------------------------------------


def _find_box(call: Call, data: dict[str, Any]) -> _Box | None:
    ensure_type_index(call.store, call.account_db)

    def by_mailbox(number: str) -> dict[str, Any] | None:
        for doc in call.store.find_all(call.account_db, {"pvt_type": "vmbox", "mailbox": number}):
            if not is_soft_deleted(doc):
                return doc
        return None

    if data.get("callerid_match_login") and call.caller_id_number:
        doc = by_mailbox(call.caller_id_number)
        if doc is not None:
            return _Box(call, doc, data)
    for _ in range(MAX_LOGIN_ATTEMPTS):
        number = _ask(call, [prompt("vm-enter_id")], 30,
                      interdigit_ms=int(data.get("interdigit_timeout") or 2000))
        doc = by_mailbox(number) if number else None
        if doc is not None:
            return _Box(call, doc, data)
        call.play(prompt("vm-fail_auth"))
    return None


def _authenticate(call: Call, box: _Box) -> bool:
    if _is_owner(call, box) and not box.doc.get("require_pin"):
        return True
    pin = str(box.doc.get("pin") or "")
    if not pin:
        # A box without a PIN is its owner's only.
        if _is_owner(call, box):
            return True
        log.info("box %s has no PIN and the caller is not its owner", box.mailbox)
        return False
    for attempt in range(1, MAX_LOGIN_ATTEMPTS + 1):
        entered = _ask(call, [prompt("vm-enter_pass")], PIN_MAX_DIGITS,
                       interdigit_ms=box.interdigit_ms)
        if entered == pin:
            return True
        log.info("wrong PIN for box %s (attempt %d)", box.mailbox, attempt)
        call.play(prompt("vm-fail_auth"))
    return False


def check(call: Call, box: _Box | None, data: dict[str, Any]) -> str | None:
    call.answer()
    if box is None:
        box = _find_box(call, data)
        if box is None:
            call.play(prompts(["vm-abort"]))
            return None
    if not _authenticate(call, box):
        call.play(prompt("vm-abort"))
        return None
    log.info("logged in to box %s", box.mailbox)
    _main_menu(call, box)
    call.play(prompt("vm-goodbye"))
    return None


def _main_menu(call: Call, box: _Box) -> None:
    failures = 0
    announce = True
    while failures < MAX_MENU_FAILURES:
        media: list[str] = []
        if announce:
            new, saved = count_messages(call.store, call.account_id, box.id)
            media += prompts(message_count_prompts(new))
            if saved:
                media += prompts(message_count_prompts(saved, saved=True))
            announce = False
        media.append(prompt("vm-main_menu"))
        key = _choose(call, media)
        if key == KEY_NEW:
            failures = 0
            _play_folder(call, box, "new")
        elif key == KEY_SAVED:
            failures = 0
            _play_folder(call, box, "saved")
        elif key == KEY_SETTINGS and not box.doc.get("not_configurable"):
            failures = 0
            _settings(call, box)
        elif key == KEY_EXIT:
            return
        else:
            failures += 1
            if key:
                _invalid(call)


def _play_folder(call: Call, box: _Box, folder: str) -> None:
    messages = list_messages(call.store, call.account_id, box.id, folder=folder)
    if not box.doc.get("oldest_message_first"):
        messages.reverse()  # Kazoo's default: newest first
    if not messages:
        call.play(prompt("vm-no_messages" if folder == "new" else "vm-no_more_messages"))
        return
    for number, message in enumerate(messages, 1):
        if _message_menu(call, box, message, number, folder) == KEY_MAIN:
            return
    call.play(prompt("vm-no_more_messages"))


def _message_menu(call: Call, box: _Box, message: dict[str, Any], number: int,
                  folder: str) -> str:
    """Play one message and run its menu; the key that left it."""
    message_id = str(message["_id"])
    audio = message_media(call.account_id, message_id)
    header = [prompt("vm-message_number"), *prompts(say_number(number))]
    stopped = call.play([*header, audio], ALL_DTMF) is not None
    if folder == "new":
        # Listened to: Kazoo moves it to the saved folder.
        _set_folder(call, box, message_id, "saved", folder)
        folder = "saved"
    failures = 0
    while failures < MAX_MENU_FAILURES:
        key = _choose(call, [prompt("vm-message_menu")], skip_prompt=stopped)
        stopped = False
        if key == KEY_REPLAY:
            stopped = call.play(audio, ALL_DTMF) is not None
            continue
        if key == KEY_SAVE:
            _set_folder(call, box, message_id, "saved", folder)
            call.play(prompt("vm-saved"))
            return key
        if key == KEY_DELETE:
            try:
                delete_message(call.store, call.account_id, message_id, vmbox_id=box.id)
            except NotFound:
                pass
            else:
                publish_mwi(call, box)
            call.play(prompt("vm-deleted"))
            return key
        if key in (KEY_NEXT, "#"):
            return KEY_NEXT
        if key == KEY_MAIN:
            return key
        failures += 1
        if key:
            _invalid(call)
    return KEY_MAIN


def _set_folder(call: Call, box: _Box, message_id: str, folder: str, current: str) -> None:
    try:
        set_folder(call.store, call.account_id, message_id, folder, box.id)
    except (NotFound, StoreError) as error:
        log.warning("cannot move message %s to %s: %s", message_id, folder, error)
        return
    if folder != current:
        # A new message listened to changes the counts the phones show.
        publish_mwi(call, box)


# -- settings ---------------------------------------------------------------------------------


def _settings(call: Call, box: _Box) -> None:
    failures = 0
    while failures < MAX_MENU_FAILURES:
        key = _choose(call, [prompt("vm-settings_menu")])
        if key == KEY_REC_GREETING:
            failures = 0
            _record_greeting(call, box)
        elif key == KEY_SET_PIN:
            failures = 0
            _change_pin(call, box)
        elif key in (KEY_RETURN, "#"):
            return
        else:
            failures += 1
            if key:
                _invalid(call)


def _record_greeting(call: Call, box: _Box) -> None:
    """Record the unavailable greeting into a new media document of the account; the box
    points at it once stored, and the greeting it replaces is soft-deleted."""
    media_id = new_doc_id()
    name = f"{media_id}.wav"
    call.play(prompt("vm-record_greeting"))
    call.flush_dtmf()
    call.play(BEEP)
    recorded = call.record(name, store_destination(call.account_db, media_id),
                           time_limit=MAX_GREETING_LENGTH, terminators=("#",),
                           silence_hits=SILENCE_HITS)
    if recorded is None or not recorded.stored:
        log.info("no greeting recorded for box %s", box.mailbox)
        return

    def describe(doc: dict[str, Any]) -> dict[str, Any]:
        doc.update(set_pvt_fields({
            "name": f"mailbox {box.mailbox} unavailable greeting",
            "description": "voicemail unavailable greeting",
            "media_source": "recording", "source_type": "voicemail", "source_id": box.id,
            "content_type": "audio/wav", "streamable": True, "media_filename": name,
        }, "media", call.account_id))
        return doc

    try:
        update_doc(call.store, call.account_db, media_id, describe)
    except NotFound:
        log.error("greeting %s of box %s was not stored", media_id, box.mailbox)
        return
    previous = (box.doc.get("media") or {}).get("unavailable")
    def point_at(doc: dict[str, Any]) -> None:
        doc.setdefault("media", {})["unavailable"] = media_id

    box.update(point_at)
    if previous and previous != media_id:
        old = call.open_doc(str(previous))
        if old is not None and old.get("source_id") == box.id:
            try:
                call.store.put(call.account_db, soft_delete(old))
            except StoreError as error:
                log.warning("cannot retire greeting %s: %s", previous, error)
    log.info("box %s has a new greeting %s (%d ms)", box.mailbox, media_id, recorded.length_ms)
    if not call.destroyed:
        call.play([account_media(call.account_id, media_id), prompt("vm-greeting_saved")])


def _change_pin(call: Call, box: _Box) -> None:
    first = _ask(call, [prompt("vm-enter_new_pin")], PIN_MAX_DIGITS, interdigit_ms=box.interdigit_ms)
    if len(first) < MIN_PIN_LENGTH:
        call.play(prompt("vm-fail_auth"))
        return
    second = _ask(call, [prompt("vm-enter_new_pin_confirm")], PIN_MAX_DIGITS,
                  interdigit_ms=box.interdigit_ms)
    if first != second:
        call.play(prompt("vm-fail_auth"))
        return
    def set_pin(doc: dict[str, Any]) -> None:
        doc["pin"] = first

    box.update(set_pin)
    log.info("box %s has a new PIN", box.mailbox)
    call.play(prompt("vm-pin_set"))


# -- the action -------------------------------------------------------------------------------


def handle(data: dict[str, Any], call: Call) -> str | None:
    action = str(data.get("action") or "compose")
    box: _Box | None = None
    if data.get("id"):
        doc = call.open_doc(str(data["id"]))
        if doc is None or doc.get("pvt_type") != "vmbox" or is_soft_deleted(doc):
            log.warning("voicemail box %s not found", data["id"])
            return "_"
        box = _Box(call, doc, data)
    if action == "check":
        return check(call, box, data)
    if box is None:
        log.warning("voicemail compose needs a box id")
        return "_"
    return compose(call, box, data)
