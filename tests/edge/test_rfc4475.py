"""Every RFC 4475 torture message, sent to a real edge over UDP: the reply its README names
(or none where it must be dropped), and the edge keeps serving (an OPTIONS after each).

The messages are read from ../shared/testdata/rfc4475, never copied into the repository.
What the edge answers where the README names no code:
- valid requests (3.1.1) get what the edge does with any such request: OPTIONS 200, REGISTER
  401 (the digest challenge), INVITE 407, an in-dialog request for a dialog it does not know
  481 (RFC 3261 12.2.2), an unknown method 501, a multipart MESSAGE 415 (the edge does not
  take multipart bodies);
- invalid requests (3.1.2) get 400 (505 for badvers) whenever a response can be routed; a
  message whose Via itself is broken (badinv01) cannot be answered and is dropped;
- responses are never answered (they match no transaction of the edge).

Several messages share a Via branch and sent-by (cparam01/cparam02, escnull/regescrt): the
second is a retransmission of the first to the transaction layer and gets the first's answer
again, so all go out from one socket, as they would from one torture-testing client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.sip import Request, SipParseError, parse_message
from protocols.sip.transaction import build_non_2xx_ack
from tests.edge.conftest import EdgeNode, provisioned_edge_node
from tests.edge.sipclient import SipProbe, raw_call_id

pytestmark = pytest.mark.timeout(300)

RFC4475_DIR = Path(__file__).resolve().parents[2].parent / "shared/testdata/rfc4475"

# file -> the status the edge answers, None for no answer at all
EXPECTED: dict[str, int | None] = {
    # 3.1.1 valid messages
    "wsinv.dat": 481,  # an INVITE with a To tag: in a dialog the edge does not know
    "intmeth.dat": 501,
    "esc01.dat": 407,
    "escnull.dat": 401,
    "esc02.dat": 501,
    "lwsdisp.dat": 200,
    "longreq.dat": 407,
    "dblreq.dat": 401,
    "semiuri.dat": 200,
    "transports.dat": 200,
    "mpart01.dat": 415,
    "unreason.dat": None,  # a response
    "noreason.dat": None,  # a response
    # 3.1.2 invalid messages
    "badinv01.dat": None,  # the Via is what is broken: no way to route an answer
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,
    "scalarlg.dat": None,  # a response
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 400,
    "trws.dat": 400,
    "escruri.dat": 400,
    "baddate.dat": 400,
    "regbadct.dat": 400,
    "badaspec.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 400,
    "bigcode.dat": None,  # a response
    # 3.2 transaction layer
    "badbranch.dat": 400,
    # 3.3 application layer
    "insuf.dat": 400,
    "unkscm.dat": 416,
    "novelsc.dat": 416,
    "unksm2.dat": 400,
    "bext01.dat": 420,
    "invut.dat": 415,
    "regaut01.dat": 401,
    "multi01.dat": 400,
    "mcl01.dat": 400,
    "bcast.dat": None,  # a response
    "zeromf.dat": 200,  # OPTIONS to the edge itself: answered, Max-Forwards 0 or not
    "cparam01.dat": 401,
    "cparam02.dat": 401,
    "regescrt.dat": 401,
    "sdp01.dat": 406,
    # 3.4 backward compatibility
    "inv2543.dat": 407,
}


# Same branch, sent-by and method as an earlier message (RFC 3261 17.2.3): while the earlier
# one's transaction lives, this one is its retransmission and gets its answer again, Call-ID
# included; afterwards it gets its own.
SAME_TRANSACTION_AS = {"cparam02.dat": "cparam01.dat", "regescrt.dat": "escnull.dat"}


def test_every_message_has_an_expectation() -> None:
    files = sorted(path.name for path in RFC4475_DIR.glob("*.dat"))
    assert len(files) == 49
    assert sorted(EXPECTED) == files


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeNode]:
    yield from provisioned_edge_node(tmp_path_factory.mktemp("edge-rfc4475"),
                                     "rfc4475.example.com", {"alice": "alice-secret"},
                                     roles=["registrar", "edge"])


@pytest.fixture(scope="module")
def probe(edge: EdgeNode) -> Iterator[SipProbe]:
    with SipProbe(edge.edge, bind_host="127.0.0.5") as client:
        yield client


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message_over_udp(edge: EdgeNode, probe: SipProbe, name: str) -> None:
    data = (RFC4475_DIR / name).read_bytes()
    expected = EXPECTED[name]
    call_ids = {raw_call_id(data)}
    if name in SAME_TRANSACTION_AS:
        call_ids.add(raw_call_id((RFC4475_DIR / SAME_TRANSACTION_AS[name]).read_bytes()))
    probe.send(data)
    answer = probe.receive(timeout=1.0 if expected is None else 15.0,
                           call_id={c for c in call_ids if c is not None} or None)
    if expected is None:
        assert answer is None, f"{name}: expected no answer, got {answer}"
    else:
        assert answer is not None, f"{name}: no answer, expected {expected}"
        assert answer.status == expected, f"{name}: {answer.status} {answer.reason}"
    if answer is not None and answer.status >= 300 and data.startswith(b"INVITE "):
        # Acknowledge a failed INVITE, as its client would, so that the edge stops
        # retransmitting the answer (broken INVITEs were answered statelessly: no ACK).
        try:
            invite = parse_message(data)
        except SipParseError:
            invite = None
        if isinstance(invite, Request) and answer.headers.get("to"):
            probe.send(build_non_2xx_ack(invite, answer))
    # And the edge keeps serving.
    options = probe.request("OPTIONS", "sip:rfc4475.example.com",
                            from_uri="sip:checker@rfc4475.example.com")
    probe.send(options)
    alive = probe.receive(timeout=15.0, call_id=options.call_id)
    assert alive is not None and alive.status == 200
