"""MWI end to end: a real node (registrar, edge, callflow, calls) and real pjsua2 phones
(tests/phones) registered through the edge.

- an ``mwi_update`` published on the node's bus reaches the registered phone of that AOR as
  an unsolicited NOTIFY ``message-summary`` (UDP and TCP), and a phone that registers learns
  the current counts at once;
- a voicemail left through the callflow (a caller's phone records 3 s into the box) lights the
  lamp of the box owner's phone: ``Voice-Message: 1/0``;
- a phone SUBSCRIBEd to its message-summary gets 200 and a NOTIFY in the dialog with the
  counts of its owner's box.

Every wait is generous: these are about what arrives, not how fast.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.sip import DigestClient
from protocols.sip.digest import retry_with_credentials
from tests.calls.conftest import (
    PBX,
    Phone,
    backends,
    calls_amqp_url,  # noqa: F401 - the amqp platform's fixture
    start_pbx,
    stop_pbx,
)
from tests.edge.sipclient import SipProbe
from tests.phones import Phone as PhoneProcess

pytestmark = pytest.mark.timeout(600)

CALLER, OWNER, OWNER_TCP, SUBSCRIBER = "1001", "1002", "1003", "1004"
MAILBOX = "3001"
# On the embedded defaults (local bus, embedded store) and on RabbitMQ + the suite's
# CouchDB-API server.
PLATFORMS = ["embedded", pytest.param("amqp+couchdb", marks=[pytest.mark.amqp,
                                                             pytest.mark.couchdb])]


class MwiPhone(PhoneProcess):
    """A phone of ``pbx`` (tests/phones) registered through its edge, watching its voicemail
    lamp: the ``mwi`` events of the NOTIFYs it takes."""

    def __init__(self, pbx: PBX, user: str, *, transport: str = "udp",
                 subscribe: bool = False, subscribe_expires: int = 600) -> None:
        self.user = user
        super().__init__(name=user, edge=pbx.edge, realm=pbx.realm, user=user,
                         password=pbx.passwords[user], transport=transport, subscribe=subscribe,
                         subscribe_expires=subscribe_expires if subscribe else None,
                         user_agent="pjsua2-mirliton-mwi", lifetime=300)

    def registered(self, timeout: float = 60.0) -> None:
        super().registered(timeout)

    def mwi(self, voice_message: str, *, after: int = 0, timeout: float = 60.0,
            in_dialog: bool | None = None) -> dict[str, Any]:
        """A message-summary NOTIFY saying ``Voice-Message: <voice_message>``."""
        def match(event: dict[str, Any]) -> bool:
            if event.get("event") != "mwi":
                return False
            if f"Voice-Message: {voice_message}" not in event.get("body", ""):
                return False
            dialog = str(event.get("subscription_state", "")).startswith("active;expires=")
            return in_dialog is None or dialog == in_dialog
        return self.wait_for(match, timeout=timeout, after=after,
                             what=f"MWI NOTIFY Voice-Message: {voice_message}")


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("mwi"), shards=1,
                    MIRLITON_MEDIA__RTP_PORT_MIN="45000", MIRLITON_MEDIA__RTP_PORT_MAX="45999",
                    **backends(request))
    try:
        # A realm of this run only: a CouchDB server may outlive one run.
        realm = f"mwi-{uuid.uuid4().hex[:6]}.example.com"
        pbx.provision(realm, [CALLER, OWNER, OWNER_TCP, SUBSCRIBER])
        owner = pbx.add_user("Owner", [OWNER, OWNER_TCP, SUBSCRIBER])
        box = pbx.add_doc("vmbox", {"name": "Owner's box", "mailbox": MAILBOX,
                                    "owner_id": owner, "pin": "4567", "skip_greeting": True})
        pbx.add_callflow([MAILBOX], {"module": "voicemail",
                                     "data": {"id": box, "action": "compose"}})
        pbx.devices["box"] = box
        yield pbx
    finally:
        stop_pbx(pbx)


def _counts(pbx: PBX) -> tuple[int, int]:
    from store.voicemail import count_messages

    with pbx.store() as store:
        return count_messages(store, pbx.account_id, pbx.devices["box"])


def _publish(pbx: PBX, user: str, new: int, saved: int) -> None:
    from bus import connect
    from bus.api.presence import mwi_update

    bus = connect(pbx.node.env.get("MIRLITON_BUS__URL", "local"), node="test-mwi",
                  data_dir=pbx.node.data_dir)
    try:
        bus.publish(mwi_update.build(to=f"{user}@{pbx.realm}", messages_new=new,
                                     messages_saved=saved, call_id="test-mwi-publish"))
    finally:
        bus.close()


@pytest.mark.parametrize(("user", "transport"), [(OWNER, "udp"), (OWNER_TCP, "tcp")])
def test_mwi_update_on_the_bus_reaches_the_registered_phone(
        pbx: PBX, phones: list[Any], user: str, transport: str) -> None:
    phone = MwiPhone(pbx, user, transport=transport)
    phones.append(phone)
    phone.registered()
    # Registering, the phone learns what its owner's box holds.
    new, saved = _counts(pbx)
    first = phone.mwi(f"{new}/{saved}")
    assert f"Message-Account: sip:{user}@{pbx.realm}" in first["body"]
    mark = len(phone.events)
    _publish(pbx, user, 3, 1)
    update = phone.mwi("3/1 (0/0)", after=mark)
    assert "Messages-Waiting: yes" in update["body"]
    mark = len(phone.events)
    _publish(pbx, user, 0, 4)
    assert "Messages-Waiting: no" in phone.mwi("0/4", after=mark)["body"]


def test_a_voicemail_left_lights_the_owners_phone(pbx: PBX, phones: list[Any],
                                                  tmp_path: Path) -> None:
    owner = MwiPhone(pbx, OWNER)
    phones.append(owner)
    owner.registered()
    new, saved = _counts(pbx)
    owner.mwi(f"{new}/{saved}")
    mark = len(owner.events)
    caller = Phone(pbx, CALLER, tmp_path, tone=440.0, record=False)
    phones.append(caller)
    caller.registered()
    caller.call(MAILBOX, pbx.realm)
    caller.state("CONFIRMED", timeout=60)
    time.sleep(4.0)  # beep, then 3 s of the phone's tone into the recording
    caller.send(cmd="hangup")
    caller.state("DISCONNECTED", timeout=60)
    lit = owner.mwi(f"{new + 1}/{saved}", after=mark, timeout=90)
    assert "Messages-Waiting: yes" in lit["body"]
    assert _counts(pbx) == (new + 1, saved)


def test_subscribe_to_message_summary_gets_the_counts(pbx: PBX, phones: list[Any]) -> None:
    # 20 s asked for: pjsua refreshes the subscription in its dialog 5 s before the end.
    phone = MwiPhone(pbx, SUBSCRIBER, subscribe=True, subscribe_expires=20)
    phones.append(phone)
    phone.registered()
    new, saved = _counts(pbx)
    notify = phone.mwi(f"{new}/{saved}", in_dialog=True)
    assert f"Message-Account: sip:{SUBSCRIBER}@{pbx.realm}" in notify["body"]
    assert notify["subscription_state"] == "active;expires=20"
    # The refresh is taken by the edge (its To-tag proves the dialog) and answered with a
    # NOTIFY in the same dialog: same Call-ID, not a new subscription after a 481.
    index = phone.events.index(notify)
    refreshed = phone.mwi(f"{new}/{saved}", in_dialog=True, after=index + 1, timeout=90)
    assert refreshed["call_id"] == notify["call_id"]


def test_subscribe_is_authenticated_and_a_forged_dialog_gets_481(pbx: PBX) -> None:
    with SipProbe(("127.0.0.1", pbx.sip_port)) as probe:
        host, port = probe.address
        uri = f"sip:{SUBSCRIBER}@{pbx.realm}"
        request = probe.request("SUBSCRIBE", uri, from_uri=uri, expires=60,
                                contact=f"<sip:{SUBSCRIBER}@{host}:{port}>",
                                extra=(("Event", "message-summary"),))
        # A refresh of a dialog the edge never made: guessing a To-tag reads no box.
        request.headers.replace("To", f"<{uri}>;tag=mwi0123456789abcdef0123")
        first = probe.exchange(request, timeout=10)
        assert first is not None and first.status == 407
        retry = retry_with_credentials(request, first,
                                       DigestClient(SUBSCRIBER, pbx.passwords[SUBSCRIBER]))
        answer = probe.exchange(retry, timeout=10)
        assert answer is not None and answer.status == 481
