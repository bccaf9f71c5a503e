"""HTTP resources (falcon responders) and the one route table that both the router and the
OpenAPI document are built from.

A responder authenticates (``X-Auth-Token``), authorizes against the account in the URL, parses
Kazoo's request envelope ``{"data": {...}, "revision": "..."}``, calls the service and answers
Kazoo's response envelope. Every failure is an :class:`ApiError` that the app renders in the
same envelope.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import falcon

from actors.crossbar.audio import FORMATS, choose_format, convert
from actors.crossbar.auth import Principal, TokenSigner
from actors.crossbar.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InvalidJson,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from actors.crossbar.live import LiveAnswer, LiveQueries
from actors.crossbar.ranges import RangeNotSatisfiable, byte_range, content_range, slice_chunks
from actors.crossbar.schemas import document_schema
from actors.crossbar.service import (
    ACCOUNT_RESOURCES,
    CrossbarService,
    ListPage,
    Query,
    ResourceKind,
    message_metadata,
    public,
)
from store.kazoo import GREGORIAN_OFFSET
from store.voicemail import FOLDERS

__all__ = ["Api", "Operation", "RouteSpec", "build_routes"]

MAX_JSON_BYTES = 1024 * 1024
# What a media upload may be: the media schema's content types (so a stored upload always fits it).
MEDIA_TYPES: tuple[str, ...] = tuple(document_schema("media")["properties"]["content_type"]["enum"])


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says about one method of one route."""

    summary: str
    # Request body: a components.schemas name for ``data``, "binary" for raw audio, or None.
    request: str | None = None
    # JSON schema of the response envelope's ``data`` (None: binary body).
    response: dict[str, Any] | None = field(default_factory=dict)
    listing: bool = False
    auth: bool = True
    success: int = 200
    # Query parameters beyond the listing ones, as OpenAPI parameter objects.
    query: tuple[dict[str, Any], ...] = ()
    # Content types of a binary response (default: the media upload types).
    content: tuple[str, ...] = ()
    # A binary response that honours Range (206 Partial Content, 416).
    ranges: bool = False


@dataclass(frozen=True)
class RouteSpec:
    template: str
    resource: Any
    operations: dict[str, Operation]


class Api:
    """Shared request plumbing: auth, envelopes, body parsing."""

    def __init__(self, service: CrossbarService, signer: TokenSigner, live: LiveQueries) -> None:
        self.service = service
        self.signer = signer
        self.live = live

    # -- request side ------------------------------------------------------------------------

    def principal(self, req: falcon.Request) -> Principal:
        token = req.get_header("X-Auth-Token")
        if not token:
            authorization = req.get_header("Authorization") or ""
            if authorization.lower().startswith("bearer "):
                token = authorization[7:].strip()
        if not token:
            token = req.get_param("auth_token")
        if not token and req.method in ("PUT", "POST", "PATCH") and (req.content_length or 0) > 0 \
                and (req.content_type or falcon.MEDIA_JSON).startswith(falcon.MEDIA_JSON):
            # Kazoo also takes the token from the request envelope.
            try:
                envelope_token = self.envelope(req).get("auth_token")
            except ApiError:
                envelope_token = None
            token = envelope_token if isinstance(envelope_token, str) else None
        if not token:
            authorization = req.get_header("Authorization") or ""
            if authorization[:6].lower() == "basic ":
                return self.service.current_principal(self._basic(authorization[6:].strip()))
            raise Unauthorized("this resource needs an X-Auth-Token", error_id="missing_token")
        req.context.auth_token = token
        return self.service.current_principal(self.signer.verify(token))

    def _basic(self, encoded: str) -> Principal:
        """HTTP Basic: ``account_id:md5("username:password")`` (Kazoo's basic_auth)."""
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("the Basic credentials are not base64 of account_id:credentials",
                               error_id="invalid_credentials") from None
        account_id, sep, credentials = decoded.partition(":")
        if not sep:
            raise Unauthorized("the Basic credentials are not account_id:credentials",
                               error_id="invalid_credentials")
        return self.service.basic_auth(account_id, credentials)

    def envelope(self, req: falcon.Request) -> dict[str, Any]:
        """The parsed request envelope; ``data`` is an object."""
        cached = getattr(req.context, "envelope", None)
        if cached is not None:
            return dict(cached)
        length = req.content_length
        if length is not None and length > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        raw = req.bounded_stream.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        if not raw.strip():
            raise BadRequest('the request needs a JSON body {"data": {...}}', error_id="invalid_envelope")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidJson() from None
        if not isinstance(body, dict):
            raise BadRequest('the request body must be a JSON object {"data": {...}}', error_id="invalid_envelope")
        if not isinstance(body.get("data"), dict):
            raise BadRequest('the request envelope needs "data" as a JSON object', error_id="invalid_envelope")
        revision = body.get("revision")
        if revision is not None and not isinstance(revision, str):
            raise BadRequest("revision must be a string", error_id="invalid_envelope")
        req.context.revision = revision
        req.context.envelope = body
        return body

    @staticmethod
    def revision(req: falcon.Request) -> str | None:
        header = req.get_header("If-Match")
        if header and header != "*":
            return header.strip().strip('"')
        value = getattr(req.context, "revision", None)
        return value if isinstance(value, str) else None

    @staticmethod
    def query(req: falcon.Request) -> Query:
        params = {k: v if isinstance(v, str) else v[-1] for k, v in req.params.items()}
        return Query.from_params(params)

    # -- response side -----------------------------------------------------------------------

    @staticmethod
    def send(
        req: falcon.Request,
        resp: falcon.Response,
        data: Any,
        *,
        status: int = 200,
        revision: str | None = None,
        page: ListPage | None = None,
        note: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "data": data,
            "status": "success",
            "request_id": req.context.request_id,
            "revision": revision or CrossbarService.list_revision(data),
        }
        token = getattr(req.context, "auth_token", None)
        if token:
            body["auth_token"] = token
        if page is not None:
            body["page_size"] = len(page.items) if not page.next_start_key else page.page_size
            if page.start_key:
                body["start_key"] = page.start_key
            if page.next_start_key:
                body["next_start_key"] = page.next_start_key
        if note:
            body["note"] = note
        if revision:
            resp.set_header("ETag", f'"{revision}"')
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(body, separators=(",", ":"), default=str)

    def send_doc(self, req: falcon.Request, resp: falcon.Response, doc: dict[str, Any], *, status: int = 200) -> None:
        self.send(req, resp, public(doc), status=status, revision=doc.get("_rev"))

    def send_live(self, req: falcon.Request, resp: falcon.Response, answer: LiveAnswer) -> None:
        self.send(req, resp, answer.items, note=answer.note)


# -- authentication ----------------------------------------------------------------------------


class UserAuth:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        token, data = self.api.service.user_auth(self.api.envelope(req)["data"])
        req.context.auth_token = token
        resp.set_header("X-Auth-Token", token)
        self.api.send(req, resp, data, status=201)


class ApiAuth:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        token, data = self.api.service.api_auth(self.api.envelope(req)["data"])
        req.context.auth_token = token
        resp.set_header("X-Auth-Token", token)
        self.api.send(req, resp, data, status=201)


# -- accounts ----------------------------------------------------------------------------------


class AccountsRoot:
    """``PUT /v2/accounts``: a child of the token's own account."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = self.api.principal(req)
        parent = self.api.service.authorize(principal, principal.account_id, write=True, resource="accounts")
        doc = self.api.service.create_account(parent, self.api.envelope(req)["data"])
        self.api.send_doc(req, resp, doc, status=201)


class AccountItem:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        self.api.send_doc(req, resp, self.api.service.get_account(account_id))

    def on_put(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        parent = self.api.service.authorize(self.api.principal(req), account_id, write=True, resource="accounts")
        doc = self.api.service.create_account(parent, self.api.envelope(req)["data"])
        self.api.send_doc(req, resp, doc, status=201)

    def _write(self, req: falcon.Request, resp: falcon.Response, account_id: str, merge: bool) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id, write=True, resource="accounts")
        data = self.api.envelope(req)["data"]
        doc = self.api.service.write_account(account, data, merge=merge, revision=self.api.revision(req))
        self.api.send_doc(req, resp, doc)

    def on_post(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self._write(req, resp, account_id, merge=False)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self._write(req, resp, account_id, merge=True)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        principal = self.api.principal(req)
        account = self.api.service.authorize(principal, account_id, write=True, resource="accounts")
        doc = self.api.service.delete_account(principal, account, self.api.revision(req))
        self.api.send_doc(req, resp, doc)


class AccountRelation:
    """``children``, ``descendants`` (listings), ``parents`` and ``tree``."""

    def __init__(self, api: Api, relation: str) -> None:
        self.api = api
        self.relation = relation

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        principal = self.api.principal(req)
        account = self.api.service.authorize(principal, account_id)
        if self.relation == "parents":
            self.api.send(req, resp, self.api.service.parents(principal, account))
        elif self.relation == "tree":
            self.api.send(req, resp, self.api.service.tree(principal, account))
        else:
            page = self.api.service.list_accounts(account_id, self.relation, self.api.query(req))
            self.api.send(req, resp, page.items, page=page)


class ApiKey:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        principal = self.api.principal(req)
        account = self.api.service.authorize(principal, account_id, write=True, resource="api_key")
        self.api.send(req, resp, self.api.service.api_key(account))


# -- account resources -------------------------------------------------------------------------


class Collection:
    def __init__(self, api: Api, kind: ResourceKind) -> None:
        self.api = api
        self.kind = kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        page = self.api.service.list_docs(self.kind, account_id, self.api.query(req))
        self.api.send(req, resp, page.items, page=page)

    def on_put(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        account = self.api.service.authorize(
            self.api.principal(req), account_id, write=True, resource=self.kind.name
        )
        doc = self.api.service.create_doc(self.kind, account, self.api.envelope(req)["data"])
        self.api.send_doc(req, resp, doc, status=201)


class Item:
    def __init__(self, api: Api, kind: ResourceKind) -> None:
        self.api = api
        self.kind = kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        self.api.send_doc(req, resp, self.api.service.get_doc(self.kind, account_id, doc_id))

    def _write(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str, merge: bool) -> None:
        principal = self.api.principal(req)
        account = self.api.service.authorize(
            principal, account_id, write=True, resource=self.kind.name, doc_id=doc_id
        )
        data = self.api.envelope(req)["data"]
        if not principal.is_admin and "priv_level" in data and data["priv_level"] != principal.priv_level:
            raise Forbidden("a user-level token cannot change priv_level", error_id="priv_level_user")
        doc = self.api.service.write_doc(
            self.kind, account, doc_id, data, merge=merge, revision=self.api.revision(req)
        )
        self.api.send_doc(req, resp, doc)

    def on_post(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        self._write(req, resp, account_id, doc_id, merge=False)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        self._write(req, resp, account_id, doc_id, merge=True)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        account = self.api.service.authorize(
            self.api.principal(req), account_id, write=True, resource=self.kind.name, doc_id=doc_id
        )
        doc = self.api.service.delete_doc(self.kind, account, doc_id, self.api.revision(req))
        self.api.send_doc(req, resp, doc)


class MediaRaw:
    """The audio of a media document: POST uploads it (Content-Type audio/...), GET streams it."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id)
        reader = self.api.service.open_media(account, doc_id)

        def chunks() -> Iterator[bytes]:
            try:
                yield from reader.iter_chunks()
            finally:
                reader.close()

        try:
            span = byte_range(req.get_header("Range"), reader.length)
        except RangeNotSatisfiable:
            reader.close()
            raise
        resp.content_type = reader.content_type
        resp.set_header("Accept-Ranges", "bytes")
        resp.set_header("X-Request-ID", req.context.request_id)
        if span is None:
            resp.content_length = reader.length
            resp.stream = chunks()
            return
        resp.status = falcon.HTTP_206
        resp.set_header("Content-Range", content_range(span, reader.length))
        resp.content_length = span[1] - span[0] + 1
        resp.stream = slice_chunks(chunks(), span)

    def on_post(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        account = self.api.service.authorize(
            self.api.principal(req), account_id, write=True, resource="media", doc_id=doc_id
        )
        content_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if content_type not in MEDIA_TYPES:
            raise UnsupportedMediaType(f"upload audio as one of: {', '.join(MEDIA_TYPES)}")
        limit = self.api.service.max_media_bytes
        if req.content_length is not None and req.content_length > limit:
            raise PayloadTooLarge(f"media uploads are limited to {limit} bytes")
        stream = req.bounded_stream

        def chunks() -> Iterator[bytes]:
            total = 0
            while True:
                chunk = stream.read(65536)
                if not chunk:
                    return
                total += len(chunk)
                if total > limit:
                    raise PayloadTooLarge(f"media uploads are limited to {limit} bytes")
                yield chunk

        if req.content_length == 0:
            raise BadRequest("the upload is empty", error_id="empty_upload")
        doc = self.api.service.put_media(account, doc_id, chunks(), content_type)
        self.api.send_doc(req, resp, doc)


class DeviceStatus:
    """``/devices/status``: which devices are registered, from the registrars."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id)
        answer = self.api.live.registrations(str(account.get("realm", "")))
        registered = {str(item.get("username", "")).lower() for item in answer.items}
        items = []
        for doc in self.api.service.live_docs(ACCOUNT_RESOURCES["devices"], account_id):
            username = ((doc.get("sip") or {}).get("username") or "").lower()
            items.append({"device_id": doc["_id"], "registered": bool(username) and username in registered})
        self.api.send(req, resp, sorted(items, key=lambda i: i["device_id"]), note=answer.note)


class Cdrs:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        page = self.api.service.list_cdrs(account_id, self.api.query(req))
        self.api.send(req, resp, page.items, page=page)


class CdrItem:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, cdr_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        self.api.send_doc(req, resp, self.api.service.get_cdr(account_id, cdr_id))


class Registrations:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id)
        self.api.send_live(req, resp, self.api.live.registrations(str(account.get("realm", ""))))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id, write=True, resource="registrations")
        self.api.live.flush_registration(str(account.get("realm", "")), None)
        self.api.send(req, resp, {"flushed": str(account.get("realm", ""))})


class RegistrationCount:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id)
        answer = self.api.live.registrations(str(account.get("realm", "")))
        self.api.send(req, resp, {"count": len(answer.items)}, note=answer.note)


class RegistrationItem:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str, username: str) -> None:
        account = self.api.service.authorize(self.api.principal(req), account_id, write=True, resource="registrations")
        self.api.live.flush_registration(str(account.get("realm", "")), username)
        self.api.send(req, resp, {"flushed": username})


class Channels:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        self.api.send_live(req, resp, self.api.live.channels(account_id))


class SystemChannels:
    """Kazoo's system-level ``/v2/channels``: every live call of every account, for the system
    account's admins only (a reseller lists its accounts' calls account by account)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = self.api.principal(req)
        if not principal.superduper:
            raise Forbidden("only the system account's admins list every call", error_id="superduper_admin_only")
        self.api.send_live(req, resp, self.api.live.channels(None))


class ChannelItem:
    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, uuid_: str) -> None:
        self.api.service.authorize(self.api.principal(req), account_id)
        answer = self.api.live.channels(account_id)
        for item in answer.items:
            if item.get("uuid") == uuid_:
                self.api.send(req, resp, item)
                return
        raise NotFound(f"no channel {uuid_}" + (f" ({answer.note})" if answer.note else ""), error_id="bad_identifier")


# -- voicemail messages ------------------------------------------------------------------------


_WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")


def _authorize_box(api: Api, req: falcon.Request, account_id: str, vmbox_id: str, *, write: bool) -> None:
    """The token reaches the account; a user-level token reaches only the messages of boxes it
    owns, even to read them (a voicemail is more private than the account's other documents)."""
    principal = api.principal(req)
    api.service.authorize(principal, account_id)
    if principal.is_admin:
        return
    box = api.service.vmbox(account_id, vmbox_id)
    if principal.owner_id is None or box.get("owner_id") != principal.owner_id:
        verb = "manage" if write else "read"
        raise Forbidden(f"a user-level token may only {verb} the messages of its own boxes",
                        error_id="priv_level_user")


def _folder_param(req: falcon.Request) -> str | None:
    folder = req.get_param("folder")
    return folder if folder else None


class VmboxMessages:
    """``/vmboxes/{id}/messages``: list (``?folder=``), and Kazoo's bulk change of folder."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=False)
        page = self.api.service.list_messages(account_id, doc_id, _folder_param(req), self.api.query(req))
        self.api.send(req, resp, page.items, page=page)

    def on_post(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=True)
        data = self.api.envelope(req)["data"]
        if "folder" not in data and _folder_param(req):
            data = {**data, "folder": _folder_param(req)}
        self.api.send(req, resp, self.api.service.move_messages(account_id, doc_id, data))


class VmboxMessage:
    """One message: its metadata, a move to another folder, a delete (soft unless ?hard=true)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def _send(self, req: falcon.Request, resp: falcon.Response, doc: dict[str, Any]) -> None:
        self.api.send(req, resp, message_metadata(doc), revision=doc.get("_rev"))

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str, msg_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=False)
        self._send(req, resp, self.api.service.get_message(account_id, doc_id, msg_id))

    def on_post(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str, msg_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=True)
        # Kazoo takes the folder from the body, or from ?folder= when there is no body.
        if not req.content_length and _folder_param(req):
            folder: Any = _folder_param(req)
        else:
            folder = self.api.envelope(req)["data"].get("folder")
        self._send(req, resp, self.api.service.move_message(account_id, doc_id, msg_id, folder))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str, msg_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=True)
        hard = (req.get_param("hard") or "false").lower()
        if hard not in ("true", "false"):
            raise BadRequest("hard must be true or false", error_id="invalid_parameter")
        self._send(req, resp, self.api.service.delete_message(account_id, doc_id, msg_id, hard=hard == "true"))


class VmboxMessageRaw:
    """The message's audio: the stored WAV, or the box's ``media_extension`` (actors/crossbar/audio.py)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: str, doc_id: str, msg_id: str) -> None:
        _authorize_box(self.api, req, account_id, doc_id, write=False)
        box = self.api.service.vmbox(account_id, doc_id)
        doc, data, stored_type = self.api.service.message_audio(account_id, doc_id, msg_id)
        fmt = choose_format(box.get("media_extension"), req.get_param("accept"), req.get_header("Accept"))
        if fmt.sox_type is None:
            content_type = fmt.content_type if stored_type.split(";")[0].strip().lower() in _WAV_TYPES else stored_type
        else:
            data = convert(data, fmt)
            content_type = fmt.content_type
        span = byte_range(req.get_header("Range"), len(data))
        resp.content_type = content_type
        resp.set_header("Content-Disposition", f'attachment; filename="{_message_filename(box, doc, fmt.extension)}"')
        resp.set_header("Accept-Ranges", "bytes")
        if span is None:
            resp.data = data
            return
        resp.status = falcon.HTTP_206
        resp.set_header("Content-Range", content_range(span, len(data)))
        resp.data = data[span[0]:span[1] + 1]


def _message_filename(box: dict[str, Any], doc: dict[str, Any], extension: str) -> str:
    """Like Kazoo's: mailbox, caller and the time the message was left (UTC)."""
    metadata = doc.get("metadata") or {}
    stamp = metadata.get("timestamp")
    when = datetime.fromtimestamp(stamp - GREGORIAN_OFFSET, UTC) if isinstance(stamp, int) else None
    parts = ["VM", str(box.get("mailbox") or ""), str(metadata.get("caller_id_number") or "unknown")]
    if when is not None:
        parts.append(f"{when:%Y-%m-%d_%H-%M-%S}")
    name = "_".join(p for p in parts if p)
    # Only characters that need no quoting in a header.
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-+") else "-" for c in name)
    return f"{safe}.{extension}"


# -- the table ---------------------------------------------------------------------------------

_ID = {"type": "string"}
_DOC_LIST = {"type": "array", "items": {"type": "object", "required": ["id"], "properties": {"id": _ID}}}
_LIVE_LIST = {"type": "array", "items": {"type": "object"}}
_MESSAGE = {"$ref": "#/components/schemas/vmbox_message"}
_FOLDER_QUERY: dict[str, Any] = {"name": "folder", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": list(FOLDERS)}}
_HARD_QUERY: dict[str, Any] = {"name": "hard", "in": "query", "required": False,
                               "schema": {"type": "string", "enum": ["true", "false"]},
                               "description": "true: remove the message and its audio for good"}
_ACCEPT_QUERY: dict[str, Any] = {"name": "accept", "in": "query", "required": False,
                                 "schema": {"type": "string", "enum": [f.content_type for f in FORMATS.values()]},
                                 "description": "The audio format wanted, in place of the Accept header"}


def _doc(schema: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{schema}"}, {"type": "object", "required": ["id"], "properties": {"id": _ID}}]}


def build_routes(api: Api, openapi: Callable[[], dict[str, Any]]) -> list[RouteSpec]:
    acc = "/v2/accounts/{account_id}"
    routes = [
        RouteSpec("/v2/user_auth", UserAuth(api), {
            "PUT": Operation("Get a token from md5(username:password) and an account name or realm",
                             "user_auth", {"$ref": "#/components/schemas/auth_data"}, auth=False, success=201),
        }),
        RouteSpec("/v2/api_auth", ApiAuth(api), {
            "PUT": Operation("Get a token from an account's api key", "api_auth",
                             {"$ref": "#/components/schemas/auth_data"}, auth=False, success=201),
        }),
        RouteSpec("/v2/openapi.json", OpenApiDocument(openapi), {
            "GET": Operation("This OpenAPI document", None, None, auth=False),
        }),
        RouteSpec("/v2/channels", SystemChannels(api), {
            "GET": Operation("Every live call of the system, from the call nodes (system admins only)",
                             None, _LIVE_LIST),
        }),
        RouteSpec("/v2/accounts", AccountsRoot(api), {
            "PUT": Operation("Create a sub-account of the token's account", "accounts", _doc("accounts"), success=201),
        }),
        RouteSpec(acc, AccountItem(api), {
            "GET": Operation("Read an account", None, _doc("accounts")),
            "PUT": Operation("Create a sub-account of this account", "accounts", _doc("accounts"), success=201),
            "POST": Operation("Replace an account", "accounts", _doc("accounts")),
            "PATCH": Operation("Merge into an account (null deletes a key)", "patch", _doc("accounts")),
            "DELETE": Operation("Soft-delete an account (it must have no descendants)", None, _doc("accounts")),
        }),
    ]
    for relation in ("children", "descendants"):
        routes.append(RouteSpec(f"{acc}/{relation}", AccountRelation(api, relation), {
            "GET": Operation(f"List the account's {relation}", None, _DOC_LIST, listing=True),
        }))
    routes += [
        RouteSpec(f"{acc}/parents", AccountRelation(api, "parents"), {
            "GET": Operation("The account's ancestors the token may see, root first", None, _DOC_LIST),
        }),
        RouteSpec(f"{acc}/tree", AccountRelation(api, "tree"), {
            "GET": Operation("The path from the top to the account, as {id, name} (Kazoo's tree)", None, _DOC_LIST),
        }),
        RouteSpec(f"{acc}/api_key", ApiKey(api), {
            "GET": Operation("The account's api key (for PUT /v2/api_auth)", None, {
                "type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}}),
        }),
        RouteSpec(f"{acc}/devices/status", DeviceStatus(api), {
            "GET": Operation("Registration status of each device, from the registrars", None, {
                "type": "array", "items": {"type": "object", "required": ["device_id", "registered"],
                                           "properties": {"device_id": _ID, "registered": {"type": "boolean"}}}}),
        }),
    ]
    for kind in ACCOUNT_RESOURCES.values():
        singular = kind.pvt_type.replace("_", " ")
        routes.append(RouteSpec(f"{acc}/{kind.name}", Collection(api, kind), {
            "GET": Operation(f"List {kind.name}: {kind.description}", None, _DOC_LIST, listing=True),
            "PUT": Operation(f"Create a {singular}", kind.schema, _doc(kind.schema), success=201),
        }))
        routes.append(RouteSpec(f"{acc}/{kind.name}/{{doc_id}}", Item(api, kind), {
            "GET": Operation(f"Read a {singular}", None, _doc(kind.schema)),
            "POST": Operation(f"Replace a {singular}", kind.schema, _doc(kind.schema)),
            "PATCH": Operation(f"Merge into a {singular} (null deletes a key)", "patch", _doc(kind.schema)),
            "DELETE": Operation(f"Soft-delete a {singular}", None, _doc(kind.schema)),
        }))
    routes += [
        RouteSpec(f"{acc}/media/{{doc_id}}/raw", MediaRaw(api), {
            "GET": Operation("Download the media's audio (one byte range with Range: bytes=...)", None, None,
                             ranges=True),
            "POST": Operation("Upload the media's audio (raw body, Content-Type audio/...)", "binary", _doc("media")),
        }),
        RouteSpec(f"{acc}/vmboxes/{{doc_id}}/messages", VmboxMessages(api), {
            "GET": Operation("List the box's voicemail messages (metadata, oldest first; deleted ones only "
                             "with folder=deleted)", None, {"type": "array", "items": _MESSAGE},
                             listing=True, query=(_FOLDER_QUERY,)),
            "POST": Operation("Move several messages to a folder: {messages: [ids], folder}",
                              "vmbox_messages_bulk", {"$ref": "#/components/schemas/vmbox_messages_bulk_result"},
                              query=(_FOLDER_QUERY,)),
        }),
        RouteSpec(f"{acc}/vmboxes/{{doc_id}}/messages/{{msg_id}}", VmboxMessage(api), {
            "GET": Operation("Read a voicemail message's metadata", None, _MESSAGE),
            "POST": Operation("Move a message to a folder: {folder: new|saved|deleted}", "vmbox_message_update",
                              _MESSAGE, query=(_FOLDER_QUERY,)),
            "DELETE": Operation("Delete a message: to the deleted folder, or for good with hard=true", None,
                                _MESSAGE, query=(_HARD_QUERY,)),
        }),
        RouteSpec(f"{acc}/vmboxes/{{doc_id}}/messages/{{msg_id}}/raw", VmboxMessageRaw(api), {
            "GET": Operation("Download a message's audio: WAV (16-bit PCM, 8 kHz mono) unless the box's "
                             "media_extension, the Accept header or ?accept= asks for another format",
                             None, None, query=(_ACCEPT_QUERY,), ranges=True,
                             content=tuple(f.content_type for f in FORMATS.values())),
        }),
        RouteSpec(f"{acc}/cdrs", Cdrs(api), {
            "GET": Operation("Call detail records from the month databases (created_from/created_to, "
                             "Gregorian seconds, at most 31 days + 1 h)", None, _DOC_LIST, listing=True),
        }),
        RouteSpec(f"{acc}/cdrs/{{cdr_id}}", CdrItem(api), {
            "GET": Operation("Read one call detail record", None, _doc("cdrs")),
        }),
        RouteSpec(f"{acc}/registrations", Registrations(api), {
            "GET": Operation("Live registrations of the account's realm, from the registrars", None, _LIVE_LIST),
            "DELETE": Operation("Flush every registration of the account's realm", None, {"type": "object"}),
        }),
        RouteSpec(f"{acc}/registrations/count", RegistrationCount(api), {
            "GET": Operation("How many registrations the account's realm has", None, {
                "type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}),
        }),
        RouteSpec(f"{acc}/registrations/{{username}}", RegistrationItem(api), {
            "DELETE": Operation("Flush one user's registrations", None, {"type": "object"}),
        }),
        RouteSpec(f"{acc}/channels", Channels(api), {
            "GET": Operation("Live calls of the account, from the call nodes", None, _LIVE_LIST),
        }),
        RouteSpec(f"{acc}/channels/{{uuid_}}", ChannelItem(api), {
            "GET": Operation("One live call of the account", None, {"type": "object"}),
        }),
    ]
    return routes


class OpenApiDocument:
    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self.build = build
        self._text: str | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._text is None:
            self._text = json.dumps(self.build(), separators=(",", ":"))
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self._text


def new_request_id(req: falcon.Request) -> str:
    given = req.get_header("X-Request-ID")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex
