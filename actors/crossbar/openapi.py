"""The OpenAPI 3.1 document of the API, generated from the route table and the document schemas
that validate writes (store/schemas, plus this app's groups and conferences), so that what the
document says and what the server does cannot drift apart silently: tests/crossbar checks that
every route is in the document and the other way round, and runs schemathesis against it."""

from __future__ import annotations

import re
from typing import Any

from actors.crossbar import schemas
from actors.crossbar.resources import MEDIA_TYPES, RouteSpec
from actors.crossbar.service import ACCOUNT_RESOURCES, MAX_PAGE_SIZE
from store.voicemail import FOLDERS

__all__ = ["ERROR_CODES", "PATH_PARAMETERS", "build_openapi"]

ERROR_CODES = {
    "400": "Bad request: invalid JSON, envelope, parameters, or validation errors as data.{field}.{rule}.message",
    "401": "Missing, invalid or expired token, or wrong credentials",
    "403": "The token does not reach this account or resource",
    "404": "Unknown account, document or route",
    "405": "Method not allowed on this route",
    "406": "The resource cannot be given in a format the request accepts (error_id names why)",
    "409": "Stale revision or a conflicting change",
    "413": "Body too large",
    "415": "Unsupported content type",
    "416": "The byte range asked for starts past the end (Content-Range: bytes */<length>)",
    "503": "Datastore unavailable",
}

_HEX32 = "^[0-9a-f]{32}$"
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "account_id": {"type": "string", "pattern": _HEX32},
    "doc_id": {"type": "string", "pattern": _HEX32},
    "msg_id": {"type": "string", "pattern": "^[0-9]{6}-[0-9a-f]{32}$", "description": "YYYYMM-<32 hex>"},
    "cdr_id": {"type": "string", "pattern": "^[0-9]{6}-[^/]+$", "description": "YYYYMM-<Call-ID>"},
    "username": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]+$"},
    "uuid_": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._@-]+$"},
}

_LISTING_PARAMETERS: list[dict[str, Any]] = [
    {"name": "page_size", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
     "description": "Items per page (default 50)"},
    {"name": "start_key", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "The next_start_key of the previous page (opaque)"},
    {"name": "paginate", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true", "false"]}},
    {"name": "created_from", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0}, "description": "Gregorian seconds"},
    {"name": "created_to", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0}, "description": "Gregorian seconds"},
]


_RANGE_HEADER: dict[str, Any] = {
    "name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "One byte range, bytes=first-[last] or bytes=-suffix; anything else is ignored",
}


def _envelope_schemas() -> dict[str, Any]:
    auth_request = {
        "type": "object",
        "properties": {
            "credentials": {"type": "string", "pattern": "^([0-9a-f]{32}|[0-9a-f]{40})$",
                            "description": "md5 (or sha1) hex of 'username:password'"},
            "account_name": {"type": "string"},
            "account_realm": {"type": "string"},
            "method": {"type": "string", "enum": ["md5", "sha"], "default": "md5"},
        },
        "required": ["credentials"],
    }
    return {
        "user_auth": auth_request,
        "api_auth": {"type": "object", "required": ["api_key"],
                     "properties": {"api_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
        "patch": {"type": "object", "description": "Fields to merge; null deletes a key"},
        "auth_data": {
            "type": "object",
            "required": ["account_id"],
            "properties": {"account_id": {"type": "string"}, "owner_id": {"type": "string"},
                           "is_reseller": {"type": "boolean"}, "reseller_id": {"type": "string"},
                           "language": {"type": "string"}, "apps": {"type": "array"}},
        },
        "vmbox_message": {
            "type": "object",
            "required": ["media_id", "folder"],
            "description": "A voicemail message's metadata (Kazoo's kzd_box_message)",
            "properties": {
                "media_id": {"type": "string", "description": "The message id, YYYYMM-<32 hex>"},
                "folder": {"type": "string", "enum": list(FOLDERS)},
                "timestamp": {"type": "integer", "description": "Gregorian seconds"},
                "length": {"type": "integer", "description": "Milliseconds"},
                "from": {"type": "string"}, "to": {"type": "string"},
                "caller_id_number": {"type": "string"}, "caller_id_name": {"type": "string"},
                "call_id": {"type": "string"},
            },
        },
        "vmbox_message_update": {
            "type": "object", "required": ["folder"],
            "properties": {"folder": {"type": "string", "enum": list(FOLDERS)}},
        },
        "vmbox_messages_bulk": {
            "type": "object", "required": ["messages", "folder"],
            "properties": {"messages": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                           "folder": {"type": "string", "enum": list(FOLDERS)}},
        },
        "vmbox_messages_bulk_result": {
            "type": "object", "required": ["succeeded", "failed"],
            "properties": {"succeeded": {"type": "array", "items": {"type": "string"}},
                           "failed": {"type": "object", "additionalProperties": {"type": "string"},
                                      "description": "message id -> why it was not moved (not_found)"}},
        },
        "error_envelope": {
            "type": "object",
            "required": ["status", "error", "error_id", "message", "request_id"],
            "properties": {
                "status": {"type": "string", "enum": ["error", "fatal"]},
                "error": {"type": "string", "description": "The HTTP status code, as Kazoo sends it"},
                "error_id": {"type": "string", "description": "A stable identifier of the error"},
                "message": {"type": "string"},
                "data": {"type": "object", "description": "Validation errors: {field: {rule: {message}}}"},
                "request_id": {"type": "string"},
                "auth_token": {"type": "string"},
            },
        },
    }


def _success(data: dict[str, Any], listing: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "data": data,
        "status": {"type": "string", "enum": ["success"]},
        "request_id": {"type": "string"},
        "revision": {"type": "string"},
        "auth_token": {"type": "string"},
        "note": {"type": "string", "description": "Why live data may be incomplete (no responder)"},
    }
    if listing:
        properties.update({
            "page_size": {"type": "integer", "minimum": 0},
            "start_key": {"type": "string"},
            "next_start_key": {"type": "string", "description": "Absent on the last page"},
        })
    return {"type": "object", "required": ["data", "status", "request_id", "revision"], "properties": properties}


def _error_responses() -> dict[str, Any]:
    return {
        code: {"description": text,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error_envelope"}}}}
        for code, text in ERROR_CODES.items()
    }


def build_openapi(routes: list[RouteSpec], *, version: str = "0.1.0") -> dict[str, Any]:
    doc_schemas = sorted({kind.schema for kind in ACCOUNT_RESOURCES.values()} | {"accounts", "cdrs"})
    components = schemas.openapi_components(doc_schemas)
    components.update(_envelope_schemas())
    paths: dict[str, Any] = {}
    for route in routes:
        names = re.findall(r"{(\w+)}", route.template)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]} for name in names
        ]
        item: dict[str, Any] = {"parameters": parameters} if parameters else {}
        for method, op in route.operations.items():
            operation: dict[str, Any] = {
                "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.template.lower()).strip('_')}",
                "summary": op.summary,
                "security": [{"auth_token": []}, {"basic": []}] if op.auth else [],
                "responses": {},
            }
            if op.listing or op.query or op.ranges:
                operation["parameters"] = [*(_LISTING_PARAMETERS if op.listing else []), *op.query,
                                           *([_RANGE_HEADER] if op.ranges else [])]
            if op.request == "binary":
                operation["requestBody"] = {
                    "required": True,
                    "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in MEDIA_TYPES},
                }
            elif op.request is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"$ref": f"#/components/schemas/{op.request}"},
                                       "revision": {"type": "string"}},
                    }}},
                }
            if op.response is None:
                if route.template.endswith("/raw"):
                    content = {t: {"schema": {"type": "string", "format": "binary"}} for t in op.content or MEDIA_TYPES}
                else:
                    content = {"application/json": {"schema": {"type": "object"}}}
                operation["responses"][str(op.success)] = {"description": "OK", "content": content}
                if op.ranges:
                    operation["responses"]["206"] = {"description": "The byte range asked for (Content-Range)",
                                                     "content": content}
            else:
                operation["responses"][str(op.success)] = {
                    "description": "Success envelope",
                    "content": {"application/json": {"schema": _success(op.response, op.listing)}},
                }
            operation["responses"].update(_error_responses())
            item[method.lower()] = operation
        paths[route.template] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mirliton Crossbar API",
            "version": version,
            "description": "Kazoo-compatible Crossbar REST API v2: PUT creates, GET reads, POST replaces, "
                           "PATCH merges (null deletes a key), DELETE soft-deletes. Requests are "
                           "{\"data\": {...}}; responses {data, status, request_id, revision, auth_token, "
                           "page_size, next_start_key}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "auth_token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "Kazoo's basic_auth: user name = account id, password = md5 "
                                         "(or sha1) hex of 'username:password'; checked on every request"},
            },
        },
    }
