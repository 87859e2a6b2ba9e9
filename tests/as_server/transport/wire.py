"""Sending one token or introspection request over a chosen transport and body format, and reading the answer."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from ace_core.messages import (
    AccessInformation,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
)
from ace_core.status import Status
from tests.as_server.transport.harness import Running

#: (transport, body format) pairs: CoAP carries only ACE CBOR (RFC 9200 §5).
FAMILIES = ["coap", "http-cbor", "http-json", "http-form"]
CONTENT_TYPES = {
    "http-cbor": "application/ace+cbor",
    "http-json": "application/json",
    "http-form": "application/x-www-form-urlencoded",
}


@dataclass
class Reply:
    """A response, transport-neutral: ``status`` is the Status (CoAP code or HTTP status)."""

    family: str
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str]

    @property
    def is_cbor(self) -> bool:
        return self.family in ("coap", "http-cbor")

    def error(self) -> ErrorResponse:
        if self.is_cbor:
            assert self.content_type in ("application/ace+cbor", "19"), self.content_type
            return ErrorResponse.from_cbor(self.body)
        assert self.content_type == "application/json", self.content_type
        return ErrorResponse.from_json_bytes(self.body)

    def access_information(self) -> AccessInformation:
        if self.is_cbor:
            return AccessInformation.from_cbor(self.body)
        return AccessInformation.from_json_bytes(self.body)

    def introspection(self) -> IntrospectionResponse:
        if self.is_cbor:
            return IntrospectionResponse.from_cbor(self.body)
        return IntrospectionResponse.from_json_bytes(self.body)


def success_status(family: str) -> int:
    """2.01 on CoAP (RFC 9200 §5.8.2), 200 on HTTP (RFC 6749 §5.1)."""
    return int(Status.CREATED) if family == "coap" else 200


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def encode(message: TokenRequest | IntrospectionRequest, family: str) -> bytes | dict[str, str]:
    if family in ("coap", "http-cbor"):
        return message.to_cbor()
    if family == "http-json":
        return message.to_json_bytes()
    return message.to_form()


def send_raw(
    dep: Running, family: str, path: str, body: bytes | dict[str, str], *, headers: dict[str, str] | None = None
) -> Reply:
    if family == "coap":
        assert isinstance(body, bytes)
        reply = dep.coap.post(path, body)
        fmt = None if reply.content_format is None else str(reply.content_format)
        extra = {}
        if reply.max_age is not None:
            extra["max-age"] = str(reply.max_age)
        if reply.size1 is not None:
            extra["size1"] = str(reply.size1)
        return Reply(family, int(Status.from_coap_code(int(reply.code))), reply.payload, fmt, extra)
    all_headers = {"Content-Type": CONTENT_TYPES[family], **(headers or {})}
    if isinstance(body, dict):
        response = dep.http.post(path, data=body, headers=all_headers)
    else:
        response = dep.http.post(path, content=body, headers=all_headers)
    ctype = response.headers.get("content-type")
    return Reply(
        family,
        response.status_code,
        response.content,
        None if ctype is None else ctype.split(";")[0],
        dict(response.headers),
    )


def send(
    dep: Running,
    path: str,
    *,
    family: str,
    message: TokenRequest | IntrospectionRequest,
    headers: dict[str, str] | None = None,
) -> Reply:
    return send_raw(dep, family, path, encode(message, family), headers=headers)


def json_of(reply: Reply) -> Any:
    return json.loads(reply.body)
