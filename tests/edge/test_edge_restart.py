"""``kill -9`` of the edge process: its supervisor restarts it, the registrations it held are
restored from the store, listed again, and a phone is reachable (``reg_query``) without
registering again."""

from __future__ import annotations

import os
import signal
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

pytestmark = pytest.mark.timeout(300)

REALM = "restart.example.com"


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeNode]:
    yield from provisioned_edge_node(tmp_path, REALM,
                                     {"2000": "secret-2000", "2001": "secret-2001"},
                                     roles=["registrar", "edge"])


def _edge_process(edge: EdgeNode) -> dict[str, object]:
    return edge.node.child("edge")


def test_kill_9_of_the_edge_keeps_registrations(edge: EdgeNode, tmp_path: Path) -> None:
    phone = PjsuaPhone(edge, "2000", "secret-2000", keep=True, hold=2.0)
    result = phone.registration_result()
    assert result is not None and result["code"] == 200
    phone.stop()  # --keep: the phone process is gone without unregistering
    baresip = BaresipPhone(edge, tmp_path, "2001", "secret-2001")
    try:
        wanted = {f"2000@{REALM}", f"2001@{REALM}"}
        wait_until(lambda: wanted <= edge.registered_aors(), timeout=30,
                   what=f"both registrations; baresip said:\n{baresip.output()}")
    finally:
        baresip.stop()  # baresip unregisters on the way out
    wait_until(lambda: f"2001@{REALM}" not in edge.registered_aors(), timeout=20,
               what="baresip's unregistration")
    before = {row["aor"]: row for row in edge.registrations()}
    assert f"2000@{REALM}" in before

    old = _edge_process(edge)
    os.kill(int(old["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_until(lambda: (c := _edge_process(edge)).get("pid") not in (None, old["pid"])
               and c.get("state") == "running", timeout=60, what="the edge process restarted")
    assert int(_edge_process(edge)["restarts"]) >= 1  # type: ignore[call-overload]

    rows = wait_until(lambda: edge.registrations(), timeout=30, what="registrations listed again")
    after = {row["aor"]: row for row in rows}
    assert set(after) == {f"2000@{REALM}"}  # the unregistered one stays gone
    kept = after[f"2000@{REALM}"]
    assert kept["contact"] == before[f"2000@{REALM}"]["contact"]
    assert kept["call_id"] == before[f"2000@{REALM}"]["call_id"]
    assert kept["source_port"] == before[f"2000@{REALM}"]["source_port"]
    assert 0 < kept["expires"] <= before[f"2000@{REALM}"]["expires"]

    # What a call leg would ask before ringing the phone: it is reachable.
    bus = connect("local", node="test-reg-query", data_dir=edge.node.data_dir)
    try:
        replies = bus.collect(reg_query.build(realm=REALM, username="2000"), timeout=3.0,
                              until=lambda rs: any(r.get("Fields") for r in rs))
    finally:
        bus.close()
    fields = [f for reply in replies for f in reply.get("Fields") or []]
    assert len(fields) == 1
    assert fields[0]["Contact"] == kept["contact"]
    assert fields[0]["Source-IP"] == "127.0.0.1"
