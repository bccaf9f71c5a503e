"""``/v2/openapi.json`` is true: it lists exactly the routes and methods the server answers, and
schemathesis, driving every operation with generated requests (a bounded number each), finds no
5xx and no response outside the document (status code, content type, body schema)."""

from __future__ import annotations

import os
import re
from typing import Any

import falcon
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from actors.crossbar.resources import MEDIA_TYPES
from actors.crossbar.service import ACCOUNT_RESOURCES
from tests.crossbar.conftest import Tree, created
from tests.crossbar.test_api import SAMPLES
from tests.crossbar.test_vmbox_messages import leave_message, tone_wav

# Bounded for CI (the whole file stays well under a minute); raise it locally to dig deeper.
EXAMPLES_PER_OPERATION = int(os.environ.get("MIRLITON_TEST_SCHEMATHESIS_EXAMPLES", "6"))
for _media_type in MEDIA_TYPES:
    # Raw audio bodies are bytes, sent as they are.
    schemathesis.serializer.alias(_media_type, "application/octet-stream")
_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")


def _falcon_routes(app: falcon.App) -> dict[str, set[str]]:
    """Every (template, methods) the falcon router serves, read from its compiled tree."""
    found: dict[str, set[str]] = {}

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node.resource is not None:
                methods = {m for m in _METHODS if hasattr(node.resource, f"on_{m.lower()}")}
                found[node.uri_template] = methods
            walk(node.children)

    walk(app._router._roots)
    return found


def test_document_lists_exactly_the_served_routes_and_methods(tree: Tree) -> None:
    document = tree.anon.get("/v2/openapi.json").json
    assert document["openapi"] == "3.1.0"
    documented = {path: {m.upper() for m in item if m.upper() in _METHODS} for path, item in document["paths"].items()}
    assert documented == _falcon_routes(tree.app.app)
    for resource in ACCOUNT_RESOURCES:
        assert f"/v2/accounts/{{account_id}}/{resource}/{{doc_id}}" in documented
    # The request schemas are the store's schemas, not copies that could drift.
    from store.schemas import load_schema

    devices = document["components"]["schemas"]["devices"]
    assert devices["required"] == load_schema("devices")["required"]
    assert set(devices["properties"]) == set(load_schema("devices")["properties"])
    assert "#/components/schemas/definitions__id32" in str(devices)


def test_every_documented_operation_answers_something_else_than_405(tree: Tree) -> None:
    document = tree.anon.get("/v2/openapi.json").json
    for template, item in document["paths"].items():
        path = re.sub(r"{\w+}", "0" * 32, template)
        for method in item:
            if method.upper() not in _METHODS:
                continue
            result = tree.system.request(method.upper(), path, {} if method.upper() in ("PUT", "POST", "PATCH") else None)
            assert result.status_code != 405, (method, template)


def test_schemathesis_all_operations(tree: Tree) -> None:
    schema = schemathesis.openapi.from_wsgi("/v2/openapi.json", tree.app)
    account_id = tree.ids["A"]
    real_ids = {name: created(tree.clients["A"].put(f"{tree.account_path('A')}/{name}", SAMPLES[name]))["id"]
                for name in ACCOUNT_RESOURCES}
    real_message = leave_message(tree.store, account_id, {"id": real_ids["vmboxes"],
                                                          "mailbox": SAMPLES["vmboxes"]["mailbox"]}, tone_wav(0.2))
    headers = {"X-Auth-Token": str(tree.system.token)}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            params = case.path_parameters or {}
            # Half the cases act on a real account and real documents, to get past the 404s.
            if "account_id" in params and hash(params["account_id"]) % 2 == 0:
                params["account_id"] = account_id
                kind = case.operation.path.split("/")[4] if case.operation.path.count("/") >= 5 else ""
                if "doc_id" in params and kind in real_ids:
                    params["doc_id"] = real_ids[kind]
                if "msg_id" in params:
                    params["msg_id"] = real_message
            response = case.call(headers=headers)
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # noqa: BLE001 - collected and reported together below
                failures.append(f"{case.method} {case.operation.path} {params}: {exc}"[:2000])

        run()
    assert operations >= 50
    assert not failures, "\n\n".join(failures[:10])
