"""The CouchDB backend: a thin driver over CouchDB 3.x's documented HTTP API on ``httpx.Client``.

- One pooled keep-alive client per store. httpx's sync client uses plain sockets, so it is
  cooperative in a gevent-patched process.
- Connection errors are retried with bounded exponential backoff, then StoreUnavailable. A write
  is retried only when the request never reached the server (connect phase), so a retry cannot
  apply a write twice; reads are retried on any transport error.
- HTTP errors become the interface's typed errors (404 NotFound, 409 Conflict, 412 file_exists
  DatabaseExists, 400 BadRequest, 401/403 AccessDenied, 5xx StoreUnavailable).
- Database names are URL-encoded (``account/ab/cd/...`` → ``account%2Fab%2Fcd%2F...``).
- Streaming feeds and attachments are requested with ``Accept-Encoding: identity``: a server may
  otherwise buffer a continuous feed behind its gzip encoder, and attachment lengths must be the
  stored bytes.

pouchdb-server (the CouchDB-API server CI can install) differs from CouchDB in ways this driver
handles only where the server identifies itself as ``express-pouchdb`` in ``GET /``:
- it strips ``/`` from database names (``account/ab/cd/x`` becomes ``accountabcdx``), so the
  driver maps ``/`` to ``$`` (a legal CouchDB name character it keeps) on the wire and back in
  ``list_dbs``; names that already contain ``$`` are refused on such a server;
- ``_all_dbs`` ignores key ranges, so ``list_dbs`` filters by prefix on the client (also correct
  against CouchDB);
- its database info reports ``doc_del_count`` as 0 whatever was deleted (so DbInfo has the
  server's figure, nothing more);
- ``_find`` answers without a ``bookmark``; when a response carries none the driver pages with
  ``skip`` behind a bookmark of its own (CouchDB always returns one, so this never triggers there).
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from store import mango
from store.base import (
    AttachmentData,
    AttachmentReader,
    BulkResult,
    Change,
    ChangesFeed,
    ChangesResult,
    DbInfo,
    FindResult,
    Seq,
    Store,
    check_db_name,
    check_doc_body,
    check_doc_id,
    new_doc_id,
)
from store.errors import (
    AccessDenied,
    BadRequest,
    Conflict,
    DatabaseExists,
    NotFound,
    StoreError,
    StoreUnavailable,
)

__all__ = ["CouchDBStore", "SERVER_COUCHDB", "SERVER_POUCHDB"]

SERVER_COUCHDB = "couchdb"
SERVER_POUCHDB = "pouchdb-server"

_SKIP_BOOKMARK = "mirliton-skip:"
# CouchDB's per-document bulk errors, as the interface's error ids.
_BULK_ERRORS = {
    "conflict": "conflict",
    "doc_validation": "bad_request",
    "bad_request": "bad_request",
    "forbidden": "access_denied",
    "unauthorized": "access_denied",
}
_ALL_PAGE_SIZE = 1000
_UPLOAD_CHUNK = 256 * 1024
_JSON_HEADERS = {"Content-Type": "application/json"}
_STREAM_HEADERS = {"Accept-Encoding": "identity"}
# An attachment is answered in its own content type, whatever JSON the client prefers.
_ATTACHMENT_HEADERS = {"Accept-Encoding": "identity", "Accept": "*/*"}

# Exceptions raised before the request left this host: always safe to retry.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Exceptions after the request may have been processed: retried for reads only.
_TRANSPORT_ERRORS = (httpx.TransportError,)


def _json_param(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _doc_path(doc_id: str) -> str:
    # Design and local documents keep their literal slash; CouchDB routes on it.
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return prefix + quote(doc_id[len(prefix) :], safe="")
    return quote(doc_id, safe="")


class CouchDBStore(Store):
    kind = "couchdb"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        pool_size: int = 20,
        heartbeat: float = 1.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"store url must be http(s)://user:pass@host:port, not {url!r}")
        auth = None
        if parts.username is not None:
            auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.base_url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self._client = httpx.Client(
            base_url=self.base_url,
            auth=auth,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=pool_size * 2, max_keepalive_connections=pool_size),
            headers={"Accept": "application/json"},
        )
        # Live feeds hold their connection for as long as they run: they get a client of their
        # own, unpooled, so any number of them never starves ordinary requests of connections.
        self._feed_client = httpx.Client(
            base_url=self.base_url,
            auth=auth,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            headers={"Accept": "application/json"},
        )
        self._server: dict[str, Any] | None = None
        self._server_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        client: httpx.Client | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        client = client or self._client
        if idempotent is None:
            # Reads sent as POST (_find, _all_docs with keys) say so themselves.
            idempotent = method in ("GET", "HEAD")
        body = content
        request_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            request_headers.update(_JSON_HEADERS)
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt - 1))
                if hasattr(body, "seek"):
                    body.seek(0)
            try:
                request = client.build_request(method, path, params=params, content=body, headers=request_headers)
                response = client.send(request, stream=stream)
            except _CONNECT_ERRORS as exc:
                last_error = exc
                continue
            except _TRANSPORT_ERRORS as exc:
                last_error = exc
                if idempotent:
                    continue
                raise StoreUnavailable(
                    f"{method} {path}: {exc!r} (the write may or may not have been applied)",
                    retry_after=self._backoff(0),
                    attempts=attempt + 1,
                ) from exc
            # A gateway error on a write may hide an applied write: only reads are re-sent.
            if idempotent and response.status_code in (502, 503, 504) and attempt < self.max_retries:
                response.close()
                last_error = StoreUnavailable(f"HTTP {response.status_code}")
                continue
            return response
        raise StoreUnavailable(
            f"{method} {path}: {last_error!r} after {self.max_retries + 1} attempts",
            retry_after=self.backoff_max,
            attempts=self.max_retries + 1,
        ) from last_error

    @staticmethod
    def _raise_for(response: httpx.Response, db: str | None = None, doc_id: str | None = None) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            if getattr(response, "is_stream_consumed", True) is False:
                response.read()
            body = response.json()
        except (ValueError, httpx.HTTPError):
            body = {}
        error = str(body.get("error", "")) if isinstance(body, dict) else ""
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
        reason = reason or error or f"HTTP {status}"
        if status == 404:
            raise NotFound(reason, db=db, doc_id=doc_id)
        if status == 409:
            raise Conflict(reason, db=db, doc_id=doc_id)
        if status == 412:
            if error == "file_exists":
                raise DatabaseExists("file_exists", db=db)
            if error == "missing_stub":
                raise BadRequest(f"missing_stub: {reason}", db=db, doc_id=doc_id)
            raise Conflict(reason, db=db, doc_id=doc_id)
        if status in (401, 403):
            raise AccessDenied(f"{error}: {reason}", db=db, doc_id=doc_id)
        if status in (400, 413, 415, 416):
            raise BadRequest(f"{error}: {reason}" if error and error != reason else reason, db=db, doc_id=doc_id)
        if status in (500, 502, 503, 504):
            raise StoreUnavailable(f"HTTP {status}: {reason}", retry_after=1.0)
        raise StoreError(f"HTTP {status}: {reason}", db=db, doc_id=doc_id)

    def _call(
        self,
        method: str,
        path: str,
        *,
        db: str | None = None,
        doc_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        response = self._request(method, path, **kwargs)
        self._raise_for(response, db, doc_id)
        if method == "HEAD" or not response.content:
            return None
        return response.json()

    # -- server and names --------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        """``GET /`` (cached): CouchDB answers ``{"couchdb": "Welcome", ...}``."""
        with self._server_lock:
            if self._server is None:
                info = self._call("GET", "/")
                self._server = info if isinstance(info, dict) else {}
            return self._server

    @property
    def server_flavor(self) -> str:
        return SERVER_POUCHDB if "express-pouchdb" in self.server_info() else SERVER_COUCHDB

    def _wire_db(self, db: str) -> str:
        check_db_name(db)
        if self.server_flavor == SERVER_POUCHDB:
            if "$" in db:
                raise BadRequest("pouchdb-server: database names with '$' are not supported", db=db)
            db = db.replace("/", "$")
        return "/" + quote(db, safe="")

    def _from_wire_db(self, name: str) -> str:
        if self.server_flavor == SERVER_POUCHDB:
            return name.replace("$", "/")
        return name

    def _doc_url(self, db: str, doc_id: str) -> str:
        return f"{self._wire_db(db)}/{_doc_path(check_doc_id(doc_id))}"

    # -- databases ---------------------------------------------------------------------------

    def create_db(self, db: str, *, exist_ok: bool = False) -> bool:
        try:
            self._call("PUT", self._wire_db(db), db=db)
        except DatabaseExists:
            if exist_ok:
                return False
            raise
        return True

    def delete_db(self, db: str, *, missing_ok: bool = False) -> bool:
        # Asking first costs one request on a rare operation and gives NotFound on servers that
        # answer 200 to deleting a missing database (pouchdb-server does); CouchDB answers 404.
        if not self.db_exists(db):
            if missing_ok:
                return False
            raise NotFound("no_db_file", db=db)
        try:
            self._call("DELETE", self._wire_db(db), db=db)
        except NotFound:
            if missing_ok:
                return False
            raise
        return True

    def db_exists(self, db: str) -> bool:
        response = self._request("HEAD", self._wire_db(db))
        if response.status_code == 404:
            return False
        self._raise_for(response, db)
        return True

    def list_dbs(self, prefix: str | None = None) -> list[str]:
        params: dict[str, Any] = {}
        if prefix:
            wire_prefix = prefix.replace("/", "$") if self.server_flavor == SERVER_POUCHDB else prefix
            params = {"start_key": _json_param(wire_prefix), "end_key": _json_param(wire_prefix + "\ufff0")}
        names = [self._from_wire_db(name) for name in self._call("GET", "/_all_dbs", params=params)]
        if prefix:
            names = [name for name in names if name.startswith(prefix)]
        return sorted(names)

    def db_info(self, db: str) -> DbInfo:
        info = self._call("GET", self._wire_db(db), db=db)
        return DbInfo(
            name=db,
            doc_count=int(info.get("doc_count", 0)),
            doc_del_count=int(info.get("doc_del_count", 0)),
            update_seq=info.get("update_seq", 0),
        )

    # -- documents ---------------------------------------------------------------------------

    def get(self, db: str, doc_id: str, *, rev: str | None = None) -> dict[str, Any]:
        params = {"rev": rev} if rev else None
        return dict(self._call("GET", self._doc_url(db, doc_id), params=params, db=db, doc_id=doc_id))

    def put(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        body = dict(check_doc_body(doc))
        doc_id = body.get("_id") or new_doc_id()
        body["_id"] = doc_id
        if body.get("_rev") is None:
            body.pop("_rev", None)
        result = self._call("PUT", self._doc_url(db, doc_id), json_body=body, db=db, doc_id=doc_id)
        saved = {"_id": doc_id, "_rev": result["rev"]}
        saved.update({k: v for k, v in body.items() if k not in ("_id", "_rev")})
        return saved

    def delete(self, db: str, doc_id: str, rev: str) -> str:
        result = self._call("DELETE", self._doc_url(db, doc_id), params={"rev": rev}, db=db, doc_id=doc_id)
        return str(result["rev"])

    def bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[BulkResult]:
        results: list[BulkResult | None] = [None] * len(docs)
        sent: list[tuple[int, dict[str, Any]]] = []
        for position, doc in enumerate(docs):
            try:
                body = dict(check_doc_body(doc))
                # Ids are chosen here, not by the server, so results match the input even when
                # a retried request has to be reconciled.
                body["_id"] = check_doc_id(body.get("_id") or new_doc_id())
            except BadRequest as exc:
                doc_id = doc.get("_id", "") if isinstance(doc, dict) else ""
                results[position] = BulkResult(id=str(doc_id), error=exc.error_id, reason=exc.reason)
                continue
            if body.get("_rev") is None:
                body.pop("_rev", None)
            sent.append((position, body))
        if sent:
            rows = self._call(
                "POST", f"{self._wire_db(db)}/_bulk_docs", json_body={"docs": [b for _, b in sent]}, db=db
            )
            for (position, body), row in zip(sent, rows, strict=True):
                if "error" in row:
                    error = _BULK_ERRORS.get(str(row["error"]), str(row["error"]))
                    results[position] = BulkResult(
                        id=str(row.get("id", body["_id"])), error=error, reason=row.get("reason")
                    )
                else:
                    results[position] = BulkResult(id=str(row["id"]), rev=str(row["rev"]))
        return [r for r in results if r is not None]

    def all_docs(
        self,
        db: str,
        *,
        keys: Sequence[str] | None = None,
        include_docs: bool = False,
        start_key: str | None = None,
        end_key: str | None = None,
        limit: int | None = None,
        skip: int = 0,
        descending: bool = False,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"include_docs": "true" if include_docs else "false"}
        if keys is not None:
            data = self._call(
                "POST",
                f"{self._wire_db(db)}/_all_docs",
                params=params,
                json_body={"keys": list(keys)},
                db=db,
                idempotent=True,
            )
        else:
            if start_key is not None:
                params["start_key"] = _json_param(start_key)
            if end_key is not None:
                params["end_key"] = _json_param(end_key)
            if limit is not None:
                params["limit"] = str(limit)
            if skip:
                params["skip"] = str(skip)
            if descending:
                params["descending"] = "true"
            data = self._call("GET", f"{self._wire_db(db)}/_all_docs", params=params, db=db)
        rows = []
        for row in data.get("rows", []):
            if "error" in row:
                rows.append({"key": row.get("key"), "error": row["error"]})
                continue
            out = {"id": row["id"], "key": row["key"], "value": dict(row.get("value") or {})}
            if include_docs:
                out["doc"] = row.get("doc") if not out["value"].get("deleted") else None
            rows.append(out)
        return rows

    # -- Mango -------------------------------------------------------------------------------

    def create_index(
        self, db: str, fields: Sequence[str], *, name: str | None = None, ddoc: str | None = None
    ) -> str:
        if not fields:
            raise BadRequest("an index needs at least one field", db=db)
        body: dict[str, Any] = {"index": {"fields": list(fields)}, "type": "json"}
        if name:
            body["name"] = name
        if ddoc:
            body["ddoc"] = ddoc
        result = self._call("POST", f"{self._wire_db(db)}/_index", json_body=body, db=db)
        return str(result.get("name", name or ""))

    def find(
        self,
        db: str,
        selector: dict[str, Any],
        *,
        fields: Sequence[str] | None = None,
        sort: Sequence[str | dict[str, str]] | None = None,
        limit: int | None = None,
        skip: int = 0,
        bookmark: str | None = None,
    ) -> FindResult:
        mango.validate_selector(selector)
        mango.normalize_sort(sort)
        if limit is not None and limit < 0 or skip < 0:
            raise BadRequest("limit and skip must not be negative", db=db)
        if limit is None:
            docs: list[dict[str, Any]] = []
            page_mark = bookmark
            while True:
                page = self._find_page(db, selector, fields, sort, _ALL_PAGE_SIZE, skip, page_mark)
                docs += page.docs
                if len(page.docs) < _ALL_PAGE_SIZE:
                    return FindResult(docs=docs, bookmark=page.bookmark)
                page_mark, skip = page.bookmark, 0
        return self._find_page(db, selector, fields, sort, limit, skip, bookmark)

    def _find_page(
        self,
        db: str,
        selector: dict[str, Any],
        fields: Sequence[str] | None,
        sort: Sequence[str | dict[str, str]] | None,
        limit: int,
        skip: int,
        bookmark: str | None,
    ) -> FindResult:
        body: dict[str, Any] = {"selector": selector, "limit": limit}
        offset = 0
        if bookmark and bookmark.startswith(_SKIP_BOOKMARK):
            offset = int(bookmark[len(_SKIP_BOOKMARK) :])
        elif bookmark:
            body["bookmark"] = bookmark
        if skip or offset:
            body["skip"] = skip + offset
        if fields is not None:
            body["fields"] = list(fields)
        if sort:
            body["sort"] = list(sort)
        result = self._call("POST", f"{self._wire_db(db)}/_find", json_body=body, db=db, idempotent=True)
        docs = list(result.get("docs", []))
        next_bookmark = result.get("bookmark")
        if next_bookmark is None:
            next_bookmark = f"{_SKIP_BOOKMARK}{skip + offset + len(docs)}"
        return FindResult(docs=docs, bookmark=str(next_bookmark))

    # -- changes -----------------------------------------------------------------------------

    @staticmethod
    def _change(row: dict[str, Any], include_docs: bool) -> Change:
        revs = row.get("changes") or [{}]
        return Change(
            seq=row["seq"],
            id=str(row["id"]),
            rev=str(revs[0].get("rev", "")),
            deleted=bool(row.get("deleted", False)),
            doc=row.get("doc") if include_docs else None,
        )

    def changes(
        self, db: str, *, since: Seq = 0, limit: int | None = None, include_docs: bool = False
    ) -> ChangesResult:
        params: dict[str, Any] = {"since": str(since), "include_docs": "true" if include_docs else "false"}
        if limit is not None:
            params["limit"] = str(limit)
        data = self._call("GET", f"{self._wire_db(db)}/_changes", params=params, db=db)
        return ChangesResult(
            results=[self._change(row, include_docs) for row in data.get("results", [])],
            last_seq=data.get("last_seq", since),
        )

    def follow(
        self,
        db: str,
        *,
        since: Seq = "now",
        include_docs: bool = False,
        idle_timeout: float | None = None,
    ) -> ChangesFeed:
        if since == "now":
            # Fix "now" at this call, not at the first read, so nothing written in between is lost.
            since = self.changes(db, since="now").last_seq
        else:
            self._wire_db(db)
        return _CouchChangesFeed(self, db, since, include_docs, idle_timeout)

    # -- attachments -------------------------------------------------------------------------

    def put_attachment(
        self,
        db: str,
        doc_id: str,
        name: str,
        data: AttachmentData,
        *,
        content_type: str,
        rev: str | None = None,
    ) -> str:
        if not name:
            raise BadRequest("attachment name must not be empty", db=db, doc_id=doc_id)
        url = f"{self._doc_url(db, doc_id)}/{quote(name, safe='')}"
        params = {"rev": rev} if rev else None
        headers = {"Content-Type": content_type}
        if isinstance(data, (bytes, bytearray, memoryview)):
            result = self._call("PUT", url, params=params, content=bytes(data), headers=headers, db=db, doc_id=doc_id)
            return str(result["rev"])
        # Spool a stream to a file so it has a Content-Length (not every server takes chunked
        # uploads) and so a retried request can send it again.
        with tempfile.TemporaryFile() as spool:
            read = getattr(data, "read", None)
            if callable(read):
                while chunk := read(_UPLOAD_CHUNK):
                    spool.write(chunk)
            else:
                for chunk in data:
                    spool.write(bytes(chunk))
            size = spool.tell()
            spool.seek(0)
            headers["Content-Length"] = str(size)
            result = self._call(
                "PUT", url, params=params, content=_FileBody(spool), headers=headers, db=db, doc_id=doc_id
            )
        return str(result["rev"])

    def open_attachment(self, db: str, doc_id: str, name: str) -> AttachmentReader:
        url = f"{self._doc_url(db, doc_id)}/{quote(name, safe='')}"
        response = self._request("GET", url, headers=_ATTACHMENT_HEADERS, stream=True)
        try:
            self._raise_for(response, db, f"{doc_id}/{name}")
        except StoreError:
            response.close()
            raise
        return _CouchAttachmentReader(response)

    def delete_attachment(self, db: str, doc_id: str, name: str, rev: str) -> str:
        url = f"{self._doc_url(db, doc_id)}/{quote(name, safe='')}"
        result = self._call("DELETE", url, params={"rev": rev}, db=db, doc_id=f"{doc_id}/{name}")
        return str(result["rev"])

    def close(self) -> None:
        self._client.close()
        self._feed_client.close()


class _FileBody:
    """Iterates a seekable file in chunks; ``seek`` lets a retry resend it from the start."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def seek(self, offset: int) -> None:
        self._file.seek(offset)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._file.read(_UPLOAD_CHUNK):
            yield chunk


class _CouchAttachmentReader(AttachmentReader):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.content_type = response.headers.get("content-type", "application/octet-stream")
        self.length = int(response.headers.get("content-length", -1))
        self.digest = "md5-" + response.headers.get("etag", "").strip('"') if response.headers.get("etag") else ""

    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes(chunk_size)
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()


class _CouchChangesFeed(ChangesFeed):
    """``_changes?feed=continuous`` with heartbeats; reconnects from ``last_seq`` after errors."""

    def __init__(
        self, store: CouchDBStore, db: str, since: Seq, include_docs: bool, idle_timeout: float | None
    ) -> None:
        self._store = store
        self._db = db
        self.last_seq = since
        self._include_docs = include_docs
        self._idle_timeout = idle_timeout
        self._closed = False
        self._response: httpx.Response | None = None

    def _open(self) -> httpx.Response:
        store = self._store
        params = {
            "feed": "continuous",
            "since": str(self.last_seq),
            "heartbeat": str(int(store.heartbeat * 1000)),
            "include_docs": "true" if self._include_docs else "false",
        }
        response = store._request(
            "GET",
            f"{store._wire_db(self._db)}/_changes",
            params=params,
            headers=_STREAM_HEADERS,
            stream=True,
            client=store._feed_client,
        )
        try:
            store._raise_for(response, self._db)
        except StoreError:
            response.close()
            raise
        return response

    def __iter__(self) -> Iterator[Change]:
        idle_since = time.monotonic()
        failures = 0
        while not self._closed:
            try:
                self._response = self._open()
                for line in self._response.iter_lines():
                    if self._closed:
                        return
                    failures = 0
                    if line.strip():
                        row = json.loads(line)
                        if "id" in row and "seq" in row:
                            change = self._store._change(row, self._include_docs)
                            self.last_seq = change.seq
                            idle_since = time.monotonic()
                            yield change
                            continue
                        if "last_seq" in row:
                            self.last_seq = row["last_seq"]
                            break
                    if self._idle_timeout is not None and time.monotonic() - idle_since >= self._idle_timeout:
                        return
                # The server ended the feed; continue from where it left off.
            except Exception as exc:
                # close() from another thread or greenlet breaks the read in various ways.
                if self._closed:
                    return
                if not isinstance(exc, httpx.TransportError):
                    raise
                failures += 1
                if failures > self._store.max_retries:
                    raise StoreUnavailable(
                        f"changes feed of {self._db}: {exc!r}", retry_after=self._store.backoff_max, attempts=failures
                    ) from exc
                time.sleep(self._store._backoff(failures - 1))
            finally:
                if self._response is not None:
                    self._response.close()
                    self._response = None
            if self._idle_timeout is not None and time.monotonic() - idle_since >= self._idle_timeout:
                return

    def close(self) -> None:
        self._closed = True
        response = self._response
        if response is not None:
            try:
                response.close()
            except (httpx.HTTPError, OSError, RuntimeError):
                # Closing from another thread races with the reader; the flag ends the loop anyway.
                pass

