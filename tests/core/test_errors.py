"""The error model (STYLE §3.3) and transport-neutral statuses: codes, classes and wire statuses."""

from __future__ import annotations

import pytest

from ace_core import errors
from ace_core.errors import (
    AceError,
    AudienceMismatch,
    ClaimsUnavailable,
    CnonceInvalid,
    InvalidClient,
    InvalidRequest,
    IssuerMismatch,
    OAuthError,
    ScopeNotRecognized,
    SecurityWrapperFailed,
    TokenExpired,
    TokenMalformed,
    TokenRejected,
    oauth_error_class,
)
from ace_core.registry import ErrorCode
from ace_core.status import Status


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


OAUTH_ERRORS = _subclasses(OAuthError)


# --- OAuthError: one class per RFC 9200 §5.8.3 error code -----------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_error_code_has_exactly_one_class(code: ErrorCode) -> None:
    defining = [cls for cls in OAUTH_ERRORS if cls.__dict__.get("code") == code]
    assert len(defining) == 1, f"{code!r} is defined by {defining}"
    assert oauth_error_class(code) is defining[0]


def test_every_oauth_error_class_has_a_code() -> None:
    for cls in OAUTH_ERRORS:
        assert isinstance(cls.code, ErrorCode), cls


def test_unregistered_code_has_no_class() -> None:
    assert oauth_error_class(255) is None


@pytest.mark.parametrize("cls", OAUTH_ERRORS, ids=lambda c: c.__name__)
def test_oauth_error_status(cls: type[OAuthError]) -> None:
    # RFC 9200 §5.8.3: 4.00 for every error response except invalid_client, which may use 4.01.
    expected = Status.UNAUTHORIZED if issubclass(cls, InvalidClient) else Status.BAD_REQUEST
    assert cls.status is expected


def test_oauth_errors_are_ace_errors() -> None:
    assert issubclass(OAuthError, AceError)
    assert issubclass(TokenRejected, AceError)


# --- TokenRejected: RFC 9200 §5.10.1.1 statuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (TokenRejected, Status.UNAUTHORIZED),
        (TokenMalformed, Status.BAD_REQUEST),
        (SecurityWrapperFailed, Status.UNAUTHORIZED),
        (ClaimsUnavailable, Status.BAD_REQUEST),
        (IssuerMismatch, Status.UNAUTHORIZED),
        (TokenExpired, Status.UNAUTHORIZED),
        (AudienceMismatch, Status.FORBIDDEN),
        (ScopeNotRecognized, Status.BAD_REQUEST),
        (CnonceInvalid, Status.UNAUTHORIZED),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v),
)
def test_token_rejected_statuses(cls: type[TokenRejected], status: Status) -> None:
    assert issubclass(cls, TokenRejected)
    assert cls.status is status


def test_token_rejected_detail_stays_off_the_wire() -> None:
    exc = SecurityWrapperFailed("unknown kid 0x1234")
    assert exc.detail == "unknown kid 0x1234"
    assert exc.status is Status.UNAUTHORIZED


# --- error_description: RFC 6749 §5.2 character set -------------------------------------------------------------


@pytest.mark.parametrize("description", ['a "quoted" word', "caf\u00e9", "back\\slash", "line\nbreak", "tab\t"])
def test_description_outside_rfc6749_set_is_refused(description: str) -> None:
    with pytest.raises(ValueError):
        InvalidRequest(description)


def test_description_inside_rfc6749_set_is_kept() -> None:
    exc = InvalidClient("client authentication failed", uri="https://example.com/errors#c")
    assert exc.description == "client authentication failed"
    assert exc.uri == "https://example.com/errors#c"
    assert exc.code is ErrorCode.INVALID_CLIENT
    assert InvalidRequest().description is None


def test_all_error_classes_are_exported() -> None:
    for cls in [*OAUTH_ERRORS, *_subclasses(TokenRejected)]:
        if cls.__module__ == errors.__name__:
            assert cls.__name__ in errors.__all__


# --- Status <-> CoAP code ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "coap_code", "dotted"),
    [
        (Status.BAD_REQUEST, 128, "4.00"),
        (Status.UNAUTHORIZED, 129, "4.01"),
        (Status.FORBIDDEN, 131, "4.03"),
        (Status.CREATED, 65, "2.01"),
        (Status.REQUEST_ENTITY_TOO_LARGE, 141, "4.13"),
        (Status.CONTENT, 69, "2.05"),
        (Status.INTERNAL_SERVER_ERROR, 160, "5.00"),
    ],
)
def test_status_coap_code(status: Status, coap_code: int, dotted: str) -> None:
    assert status.coap_code == coap_code
    assert status.coap_dotted == dotted
    assert Status.from_coap_code(coap_code) is status


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_status_round_trips_through_coap_code(status: Status) -> None:
    assert Status.from_coap_code(status.coap_code) is status
    assert status.http_status == int(status)


def test_unknown_coap_code_is_refused() -> None:
    with pytest.raises(ValueError):
        Status.from_coap_code((4 << 5) | 31)  # 4.31 is not a status this project uses
