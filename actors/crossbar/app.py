"""The WSGI application: falcon routes from the route table, Kazoo envelopes for every error,
request ids and metrics. ``make_app(store, bus=...)`` is all a server (or a test) needs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import falcon

from actors.crossbar import metrics
from actors.crossbar.auth import TokenSigner, load_signing_secret
from actors.crossbar.errors import (
    ApiError,
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    ValidationError,
)
from actors.crossbar.live import LiveQueries
from actors.crossbar.notifier import BusNotifier, Notifier
from actors.crossbar.openapi import build_openapi
from actors.crossbar.resources import Api, RouteSpec, build_routes, new_request_id
from actors.crossbar.service import CrossbarService
from bus import Bus
from store import Store
from store import errors as store_errors

__all__ = ["CrossbarApp", "make_app"]

log = logging.getLogger("mirliton.crossbar")


_TUNNELLED_VERBS = ("GET", "PUT", "PATCH", "DELETE")


class _RequestContext:
    """Request id, timing and metrics around every request (matched or not)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.request_id = new_request_id(req)
        # Kazoo's verb tunnelling for clients that can only POST: POST ...?verb=PATCH.
        verb = req.get_param("verb")
        if verb and req.method == "POST" and verb.upper() in _TUNNELLED_VERBS:
            req.method = verb.upper()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Request-ID", req.context.request_id)
        code = int(str(resp.status).split(" ", 1)[0]) if not isinstance(resp.status, int) else resp.status
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        metrics.observe(req.uri_template if resource is not None else None, req.method, code, elapsed)


def _render_error(req: falcon.Request, resp: falcon.Response, error: ApiError) -> None:
    body: dict[str, Any] = {
        "data": error.data if error.data is not None else {"message": error.message},
        "error": str(error.status),
        "error_id": error.error_id,
        "message": error.message,
        "status": "error",
        "request_id": getattr(req.context, "request_id", "") or new_request_id(req),
    }
    token = getattr(req.context, "auth_token", None)
    if token:
        body["auth_token"] = token
    resp.status = falcon.code_to_http_status(error.status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body, separators=(",", ":"), default=str)
    for name, value in error.headers.items():
        resp.set_header(name, value)
    # Falcon's error path skips the stream a responder may have set: make sure it is gone.
    resp.stream = None


def _on_api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict[str, Any]) -> None:
    _render_error(req, resp, ex)


def _on_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]) -> None:
    status = int(str(ex.status).split(" ", 1)[0]) if not isinstance(ex.status, int) else ex.status
    error: ApiError
    if status == 404:
        error = NotFound("no such route", error_id="unknown_route")
    elif status == 405:
        allowed = dict(ex.headers or {}).get("Allow", "")
        error = MethodNotAllowed(f"allowed here: {allowed}" if allowed else None, headers={"Allow": allowed} if allowed else None)
    else:
        error = ApiError(ex.title or "error", error_id=f"http_{status}")
        error.status = status
    _render_error(req, resp, error)


def _on_store_error(req: falcon.Request, resp: falcon.Response, ex: store_errors.StoreError, params: dict[str, Any]) -> None:
    error: ApiError
    if isinstance(ex, store_errors.StoreUnavailable):
        error = CrossbarService.store_unavailable(ex)
    elif isinstance(ex, store_errors.ValidationFailed):
        error = ValidationError(ex.errors)
    elif isinstance(ex, store_errors.NotFound):
        error = NotFound(ex.reason)
    elif isinstance(ex, store_errors.Conflict):
        error = Conflict(ex.reason)
    elif isinstance(ex, store_errors.BadRequest):
        error = BadRequest(ex.reason)
    else:
        log.error("store error on %s %s: %s", req.method, req.path, ex, exc_info=True)
        error = ServiceUnavailable(str(ex))
    _render_error(req, resp, error)


def _on_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=ex)
    _render_error(req, resp, ApiError())


class CrossbarApp:
    """The falcon app and what it was built from (route table, service, OpenAPI document)."""

    def __init__(self, app: falcon.App, routes: list[RouteSpec], service: CrossbarService, api: Api) -> None:
        self.app = app
        self.routes = routes
        self.service = service
        self.api = api

    def openapi(self) -> dict[str, Any]:
        return build_openapi(self.routes)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


def make_app(
    store: Store,
    *,
    bus: Bus | None = None,
    notifier: Notifier | None = None,
    live_timeout: float = 0.5,
    live_responders: Callable[[str], int | None] | None = None,
    signer: TokenSigner | None = None,
) -> CrossbarApp:
    """The Crossbar WSGI app over ``store``; ``bus`` (optional) carries notifications and live queries."""
    signer = signer or TokenSigner(load_signing_secret(store))
    if notifier is None and bus is not None:
        notifier = BusNotifier(bus)
    service = CrossbarService(store, signer, notifier=notifier)
    api = Api(service, signer, LiveQueries(bus, timeout=live_timeout, responders=live_responders))
    app = falcon.App(middleware=[_RequestContext()])
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    app.resp_options.secure_cookies_by_default = False
    holder: dict[str, Any] = {}
    routes = build_routes(api, lambda: build_openapi(holder["routes"]))
    holder["routes"] = routes
    for route in routes:
        app.add_route(route.template, route.resource)
    app.add_error_handler(Exception, _on_unexpected)
    app.add_error_handler(store_errors.StoreError, _on_store_error)
    app.add_error_handler(falcon.HTTPError, _on_http_error)
    app.add_error_handler(ApiError, _on_api_error)
    return CrossbarApp(app, routes, service, api)
