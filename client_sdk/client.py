"""``AceClient``: what an app uses to obtain access tokens from an ACE authorization server (RFC 9200 §5.8).

The transport follows the AS URI's scheme: ``coap://`` sends the token request as an ``application/ace+cbor``
payload with the client credentials inside it; ``http(s)://`` sends the same CBOR body with the credentials in
HTTP Basic (RFC 6749 §2.3.1). Errors come back as the :class:`~ace_core.errors.OAuthError` subclass of the
RFC 9200 §5.8.3 error code, so an app can handle ``InvalidScope`` or ``InvalidClient`` specifically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ace_core.errors import WireFormatError
from ace_core.messages import ACE_PROFILE_REQUESTED, AccessInformation, ErrorResponse, TokenRequest
from ace_core.registry import MEDIA_TYPE_ACE_CBOR, AceProfile, ContentFormat

__all__ = ["AceClient", "TokenRequestFailed"]


class TokenRequestFailed(Exception):
    """The AS answered with something other than a token or an RFC 9200 error response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"token request failed ({status}): {detail}")
        self.status = status


class AceClient:
    """A client with pre-established credentials at one AS.

    :param as_uri: the token endpoint, e.g. ``coap://as.example.org/token`` or ``https://as.example.org/token``.
    """

    def __init__(self, as_uri: str, client_id: str, client_secret: str, *, timeout: float = 10.0) -> None:
        scheme = urlsplit(as_uri).scheme
        if scheme not in ("coap", "coaps", "http", "https"):
            raise ValueError(f"unsupported AS URI scheme {scheme!r}: use coap:// or http(s)://")
        self.as_uri = as_uri
        self.client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._coap: Any = None
        self._http: Any = None

    def __repr__(self) -> str:
        return f"AceClient({self.as_uri!r}, client_id={self.client_id!r})"

    async def request_token(
        self,
        audience: str,
        scope: str | bytes,
        *,
        ace_profile: AceProfile | None = None,
        req_cnf: Mapping[int, Any] | None = None,
        cnonce: bytes | None = None,
    ) -> AccessInformation:
        """Ask the AS for an access token (RFC 9200 §5.8.1) and return the access information (§5.8.2).

        Without ``ace_profile`` the AS is asked to name the profile it chose (§5.8.4.3).

        :raises OAuthError: the AS refused (the subclass names the RFC 9200 error code).
        :raises TokenRequestFailed: any other failure response.
        """
        request = TokenRequest(
            audience=audience,
            scope=scope,
            ace_profile=ACE_PROFILE_REQUESTED if ace_profile is None else ace_profile,
            req_cnf=req_cnf,
            cnonce=cnonce,
        )
        if urlsplit(self.as_uri).scheme.startswith("coap"):
            from client_sdk.transport.coap import CoapTransport

            if self._coap is None:
                self._coap = CoapTransport(timeout=self._timeout)
            with_credentials = dataclasses.replace(
                request, client_id=self.client_id, client_secret=self._secret.encode()
            )
            response = await self._coap.post(
                self.as_uri, with_credentials.to_cbor(), content_format=ContentFormat.ACE_CBOR
            )
        else:
            from client_sdk.transport.http import HttpTransport

            if self._http is None:
                self._http = HttpTransport(timeout=self._timeout)
            response = await self._http.post(
                self.as_uri,
                request.to_cbor(),
                content_type=MEDIA_TYPE_ACE_CBOR,
                basic_auth=(self.client_id, self._secret),
            )
        if response.ok:
            try:
                return AccessInformation.from_cbor(response.payload)
            except WireFormatError as exc:
                raise TokenRequestFailed(response.status, f"unreadable token response: {exc}") from exc
        try:
            error = ErrorResponse.from_cbor(response.payload)
        except WireFormatError:
            raise TokenRequestFailed(response.status, response.payload[:200].decode(errors="replace")) from None
        refusal = error.to_exception()
        if refusal is None:
            raise TokenRequestFailed(response.status, f"unknown error code {error.error}")
        raise refusal

    async def close(self) -> None:
        """Release the transports."""
        for transport in (self._coap, self._http):
            if transport is not None:
                await transport.close()
        self._coap = self._http = None
