"""The same registration flow with the cluster backends: ``bus=amqp`` (real RabbitMQ) and
``store=couchdb`` (the CouchDB-API server of the test suite, or MIRLITON_TEST_COUCHDB_URL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import connect
from bus.api.registration import reg_query
from tests.edge.conftest import (
    BaresipPhone,
    EdgeNode,
    PjsuaPhone,
    provisioned_edge_node,
    wait_until,
)
from tests.edge.sipclient import SipProbe

pytestmark = [pytest.mark.timeout(300), pytest.mark.amqp]


@pytest.fixture
def edge(tmp_path: Path, edge_amqp_url: str, couchdb_url: str) -> Iterator[EdgeNode]:
    # The CouchDB server is shared by the suite: a realm of this test's own.
    yield from provisioned_edge_node(
        tmp_path, f"cluster-{uuid.uuid4().hex[:8]}.example.com",
        {"3000": "secret-3000", "3001": "secret-3001", "3002": "secret-3002"},
        roles=["registrar", "edge"], MIRLITON_BUS__URL=edge_amqp_url,
        MIRLITON_STORE__URL=couchdb_url)


def test_phones_register_over_amqp_and_couchdb(edge: EdgeNode, edge_amqp_url: str,
                                               tmp_path: Path) -> None:
    realm = edge.realm
    pjsua = PjsuaPhone(edge, "3000", "secret-3000")
    baresip = BaresipPhone(edge, tmp_path, "3001", "secret-3001")
    try:
        result = pjsua.registration_result()
        assert result is not None and result["code"] == 200, pjsua.events
        wanted = {f"3000@{realm}", f"3001@{realm}"}
        wait_until(lambda: wanted <= edge.registered_aors(), timeout=30,
                   what=f"registrations listing; baresip said:\n{baresip.output()}")
        rows = {row["aor"]: row for row in edge.registrations()}
        assert rows[f"3000@{realm}"]["user_agent"] == "pjsua2-mirliton-test"
        assert "baresip" in rows[f"3001@{realm}"]["user_agent"].lower()
        # reg_query over RabbitMQ finds them.
        bus = connect(edge_amqp_url, node="test-reg-query")
        try:
            replies = bus.collect(reg_query.build(realm=realm), timeout=3.0,
                                  until=lambda rs: any(r.get("Fields") for r in rs))
        finally:
            bus.close()
        found = {f["AOR"] for r in replies for f in r.get("Fields") or []}
        assert wanted <= found
    finally:
        pjsua.stop()
        baresip.stop()
    # Wrong password and unknown user behave as on the embedded defaults.
    with SipProbe(edge.edge) as probe:
        _, wrong = probe.register_with_password("3002", realm, "not-it")
        _, unknown = probe.register_with_password("nobody", realm, "not-it")
        assert wrong is not None and unknown is not None
        assert wrong.status == unknown.status == 401
        _, right = probe.register_with_password("3002", realm, "secret-3002")
        assert right is not None and right.status == 200
