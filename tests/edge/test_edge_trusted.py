"""Trusted sources (``edge.trusted_cidrs``) skip the guards and authentication, as Kazoo's
trusted address table does; everyone else still meets them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.conftest import EdgeNode, provisioned_edge_node
from tests.edge.sipclient import SipProbe

pytestmark = pytest.mark.timeout(300)

REALM = "trusted.example.com"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeNode]:
    yield from provisioned_edge_node(tmp_path_factory.mktemp("edge-trusted"), REALM,
                                     {"4000": "secret-4000"}, roles=["registrar", "edge"],
                                     MIRLITON_EDGE__TRUSTED_CIDRS='["127.0.0.6/32"]',
                                     MIRLITON_EDGE__FLOOD_REQUESTS="20")


def test_trusted_source_skips_guards_and_authentication(edge: EdgeNode, tmp_path: Path) -> None:
    with SipProbe(edge.edge, bind_host="127.0.0.6") as gateway:
        # A scanner-like User-Agent and no credentials: trusted, so registered at once.
        answer = gateway.exchange(gateway.register("4000", REALM, user_agent="friendly-scanner"))
        assert answer is not None and answer.status == 200
        # Well over the flood limit (20 per 2 s here): all answered.
        answered = 0
        for _ in range(40):
            reply = gateway.exchange(gateway.request("MESSAGE", f"sip:4000@{REALM}",
                                                     from_uri=f"sip:gw@{REALM}"), timeout=2.0)
            answered += reply is not None
        assert answered == 40
    assert f"4000@{REALM}" in edge.registered_aors()


def test_untrusted_source_still_meets_the_guards(edge: EdgeNode) -> None:
    with SipProbe(edge.edge, bind_host="127.0.0.7") as phone:
        assert phone.exchange(phone.register("4000", REALM, user_agent="friendly-scanner"),
                              timeout=1.0) is None
        challenge = phone.exchange(phone.register("4000", REALM))
        assert challenge is not None and challenge.status == 401
        answered = 0
        for _ in range(40):
            reply = phone.exchange(phone.request("MESSAGE", f"sip:4000@{REALM}",
                                                 from_uri=f"sip:x@{REALM}"), timeout=0.5)
            answered += reply is not None
        assert answered < 40  # the flood limit of this node (20 per 2 s) cut in
