"""The edge relays calls to the shards, and nothing else: a request crafted to reach a shard
through the edge (its Route naming the edge, its Request-URI a shard, forged account headers)
is challenged like any new call instead of being relayed."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.calls.conftest import PBX, start_pbx, stop_pbx

pytestmark = pytest.mark.timeout(120)

REALM = "relay.example.com"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("relay"))
    try:
        pbx.provision(REALM, ["1001"])
        yield pbx
    finally:
        stop_pbx(pbx)


def _exchange(pbx: PBX, message: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        port = sock.getsockname()[1]
        sock.sendto(message.replace("{port}", str(port)).encode(), ("127.0.0.1", pbx.sip_port))
        while True:  # the final answer (a 100 Trying may come first)
            data, _ = sock.recvfrom(65535)
            text = data.decode()
            if not text.startswith("SIP/2.0 1"):
                return text


def test_a_forged_request_to_a_shard_is_challenged_not_relayed(pbx: PBX) -> None:
    shard = json.loads((Path(pbx.node.data_dir) / "run" / "calls" / "shard-0.json").read_text())
    call_id = uuid.uuid4().hex
    invite = (
        f"INVITE sip:mirliton@{shard['host']}:{shard['port']} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Route: <sip:127.0.0.1:{pbx.sip_port};lr>\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@{REALM}>;tag=forged\r\n"
        f"To: <sip:2000@{REALM}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:1001@127.0.0.1:{port}>\r\n"
        f"X-Mirliton-CCV-Account-ID: {pbx.account_id}\r\n"
        "X-Mirliton-CCV-Authorizing-Type: device\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    answer = _exchange(pbx, invite)
    assert answer.startswith("SIP/2.0 407"), answer
    assert not any(row["call_id"] == call_id for row in pbx.calls())
