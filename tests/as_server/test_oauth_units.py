"""Units of :mod:`as_server.oauth` without sockets: redirect URIs (RFC 8252 §7), CSRF tokens and password sign-in
(:mod:`as_server.oauth.signin`), opaque values, the PKCE extension, and the modules' doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from as_server.auth import FailureRateLimiter
from as_server.errors import TooManyRequests
from as_server.identity import LocalIdentityProvider, PasswordHasher
from as_server.models import User
from as_server.oauth import redirect_uris
from as_server.oauth.authorization_code import _compare_s256
from as_server.oauth.signin import SIGNIN_FAILED, CsrfTokens, SignIn, SignInFailed, request_binding
from as_server.sealing import MasterKey
from as_server.storage.memory import MemoryStorage

# --- redirect URIs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "registered"),
    [
        ("http://127.0.0.1:8080/callback", "http://127.0.0.1/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1/callback"),
        ("http://[::1]:4000/cb?x=1", "http://[::1]/cb?x=1"),
        ("com.example.app:/callback", "com.example.app:/callback"),
        ("com.example.app:/oauth2redirect/example-provider", "com.example.app:/oauth2redirect/example-provider"),
        ("https://app.example/callback", "https://app.example/callback"),
    ],
)
def test_registrable_redirect_uris(uri: str, registered: str) -> None:
    assert redirect_uris.normalize(uri) == registered


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8080/callback",  # RFC 8252 §8.3: NOT RECOMMENDED
        "http://app.example/callback",  # plain http off loopback
        "http://10.0.0.1/callback",
        "myapp:/callback",  # a private-use scheme must be a reverse domain name (RFC 8252 §7.1)
        "javascript:alert(1)",
        "data:text/html,hi",
        "/relative/callback",
        "https://app.example/cb#fragment",  # RFC 6749 §3.1.2
        "https://user@app.example/cb",
        "https://app.example/c b",
        "https://app.example/cé",
        "http://127.0.0.1:99999/cb",
        "",
        "https://" + "a" * 2001,
    ],
)
def test_refused_redirect_uris(uri: str) -> None:
    with pytest.raises(redirect_uris.InvalidRedirectUri):
        redirect_uris.normalize(uri)


def test_matching_ignores_only_the_loopback_port() -> None:
    registered = ["http://127.0.0.1/callback", "com.example.app:/callback", "https://app.example/cb"]
    assert redirect_uris.find_match(registered, "http://127.0.0.1:51000/callback") == registered[0]
    assert redirect_uris.find_match(registered, "http://127.0.0.1/callback") == registered[0]
    assert redirect_uris.find_match(registered, "http://[::1]:51000/callback") is None  # another address
    assert redirect_uris.find_match(registered, "http://127.0.0.1:51000/callback2") is None
    assert redirect_uris.find_match(registered, "http://127.0.0.1:51000/callback?x=1") is None
    assert redirect_uris.find_match(registered, "https://app.example:443/cb") is None  # exact for non-loopback
    assert redirect_uris.find_match(registered, "https://app.example/cb/") is None
    assert redirect_uris.find_match(registered, "com.example.app:/callback") == registered[1]
    assert redirect_uris.find_match(registered, "com.example.app://callback") is None


@given(st.text(max_size=80))
def test_matching_never_raises(presented: str) -> None:
    redirect_uris.find_match(["http://127.0.0.1/cb", "com.example.app:/cb"], presented)


# --- CSRF ------------------------------------------------------------------------------------------------------


def test_csrf_token_is_bound_to_cookie_request_and_time() -> None:
    tokens = CsrfTokens(MasterKey.generate()[0], lifetime=600)
    cookie = tokens.new_cookie()
    binding = request_binding([("client_id", "app"), ("state", "s")])
    token = tokens.issue(cookie, binding, now=1000)
    assert tokens.check(cookie, token, binding, now=1000)
    assert tokens.check(cookie, token, binding, now=1600)
    assert not tokens.check(cookie, token, binding, now=1601)  # stale
    assert not tokens.check(cookie, token, binding, now=999)  # from the future
    assert not tokens.check(tokens.new_cookie(), token, binding, now=1000)  # another browser
    assert not tokens.check(None, token, binding, now=1000)
    assert not tokens.check(cookie, None, binding, now=1000)
    other = request_binding([("client_id", "app"), ("state", "t")])
    assert not tokens.check(cookie, token, other, now=1000)  # another authorization request
    assert not tokens.check(cookie, token[:-2] + "AA", binding, now=1000)  # altered
    assert not CsrfTokens(MasterKey.generate()[0], lifetime=600).check(cookie, token, binding, now=1000)


def test_request_binding_is_unambiguous() -> None:
    assert request_binding([("a", "bc")]) != request_binding([("ab", "c")])
    assert request_binding([("a", "1"), ("b", "2")]) != request_binding([("b", "2"), ("a", "1")])


@given(st.text(max_size=100), st.text(max_size=600))
def test_csrf_check_never_raises(cookie: str, token: str) -> None:
    tokens = CsrfTokens(MasterKey.generate()[0], lifetime=600)
    assert not tokens.check(cookie, token, b"\x00" * 32, now=0)


def test_invalid_cookie_is_not_used() -> None:
    tokens = CsrfTokens(MasterKey.generate()[0], lifetime=600)
    assert not tokens.valid_cookie("short")
    with pytest.raises(ValueError):
        tokens.issue("not base64url!", b"\x00" * 32, now=0)


# --- sign-in ---------------------------------------------------------------------------------------------------


def _sign_in(limit: int = 3) -> tuple[SignIn, MemoryStorage]:
    storage = MemoryStorage()
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    storage.add_user(User(name="alice", password_hash=hasher.hash("pw-alice")), actor="cli:t", now=0)
    storage.add_user(User(name="bob", password_hash=hasher.hash("pw-bob"), enabled=False), actor="cli:t", now=0)
    storage.add_user(User(name="sso"), actor="cli:t", now=0)  # no local password
    return SignIn(LocalIdentityProvider(storage, hasher), FailureRateLimiter(limit=limit, window=60), None), storage


@pytest.mark.parametrize(
    ("name", "password"),
    [("alice", "wrong"), ("nobody", "pw"), ("bob", "pw-bob"), ("sso", ""), ("", "pw"), ("alice", "x" * 2000)],
)
def test_every_failed_sign_in_reads_the_same(name: str, password: str) -> None:
    sign_in, _ = _sign_in(limit=100)
    with pytest.raises(SignInFailed) as caught:
        sign_in.authenticate(name, password, client_id="app", peer="192.0.2.1", now=0)
    assert str(caught.value) == SIGNIN_FAILED


def test_sign_in_succeeds_and_strips_the_name() -> None:
    sign_in, _ = _sign_in()
    assert sign_in.authenticate(" alice ", "pw-alice", client_id="app", peer="192.0.2.1", now=0).name == "alice"


def test_failed_sign_ins_are_limited_per_user_and_address() -> None:
    sign_in, _ = _sign_in(limit=3)
    for _ in range(3):
        with pytest.raises(SignInFailed):
            sign_in.authenticate("alice", "wrong", client_id="app", peer="192.0.2.1", now=0)
    with pytest.raises(TooManyRequests):  # even with the right password, from anywhere
        sign_in.authenticate("alice", "pw-alice", client_id="app", peer="198.51.100.7", now=1)
    assert sign_in.authenticate("alice", "pw-alice", client_id="app", peer="198.51.100.7", now=61).name == "alice"


# --- PKCE and doctests -----------------------------------------------------------------------------------------


def test_s256_comparison_rfc7636_appendix_b() -> None:
    # RFC 7636 Appendix B: the example verifier and its S256 challenge.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert _compare_s256(verifier, challenge)
    assert not _compare_s256(verifier, challenge[:-1] + "N")


@pytest.mark.parametrize("name", ["as_server.oauth.redirect_uris", "as_server.oauth.opaque"])
def test_module_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
