"""Client nonces (``cnonce``) for AS Request Creation Hints: RFC 9200 §5.3.1.

An RS that cannot check ``exp`` (or wants proof that a token was issued *after* it sent the hints) puts a
``cnonce`` into the hints; the client copies it into its token request, the AS copies it into the token
(§5.8.4.4), and the RS accepts the token only if the ``cnonce`` is one it issued and is still fresh. §5.3.1
requires the RS to keep state for this: :class:`CnonceManager` remembers each cnonce it issued with the
monotonic time of issue, for ``lifetime`` seconds.

Decisions:

* **Freshness is age**, not single use: a cnonce is fresh while ``monotonic - issued <= lifetime``. A token is
  bound to a PoP key, so replaying it gains nothing; single use would break a client that re-posts the same token
  to derive a new OSCORE context (RFC 9203 §4.1). For the same reason the authz-info handler checks the cnonce only
  on the *first* receipt of a token (a ``cti`` the RS does not currently hold).
* **Bounded state**: at most ``max_outstanding`` cnonces are remembered; issuing one more forgets the oldest (a
  client that was that slow gets a 4.01 and new hints). Expired entries are dropped as new ones are issued.
* cnonces do not survive a restart (they are not persisted): the next 4.01 carries a new one.

>>> manager = CnonceManager(lifetime=60, rng=lambda n: bytes(range(n)))
>>> nonce = manager.issue(monotonic=0.0)
>>> manager.is_fresh(nonce, monotonic=59.0), manager.is_fresh(nonce, monotonic=61.0)
(True, False)
>>> manager.is_fresh(None, monotonic=0.0)
False
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["CNONCE_LENGTH", "CnonceManager"]

#: Bytes of randomness in a cnonce (RFC 9200 §5.3.1 gives no length; 64 bits like the OSCORE nonces, RFC 9203).
CNONCE_LENGTH = 8


class CnonceManager:
    """Issues cnonces and tells whether one is fresh. RFC 9200 §5.3.1.

    :param lifetime: seconds a cnonce stays fresh (about the time a client needs to obtain a token).
    :param max_outstanding: cnonces remembered at most.
    :param rng: source of random bytes (injectable for tests).
    """

    def __init__(
        self,
        *,
        lifetime: float,
        max_outstanding: int = 256,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if lifetime <= 0 or max_outstanding < 1:
            raise ValueError("lifetime must be positive and max_outstanding at least 1")
        self.lifetime = lifetime
        self.max_outstanding = max_outstanding
        self._rng = rng
        self._issued: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._issued)

    def issue(self, *, monotonic: float) -> bytes:
        """A new cnonce for a hints message, remembered as issued at ``monotonic``."""
        self._forget_expired(monotonic)
        while len(self._issued) >= self.max_outstanding:
            self._issued.popitem(last=False)
        nonce = self._rng(CNONCE_LENGTH)
        self._issued.pop(nonce, None)
        self._issued[nonce] = monotonic
        return nonce

    def is_fresh(self, cnonce: bytes | None, *, monotonic: float) -> bool:
        """Whether ``cnonce`` was issued here and is at most ``lifetime`` seconds old."""
        if cnonce is None:
            return False
        issued = self._issued.get(cnonce)
        return issued is not None and 0 <= monotonic - issued <= self.lifetime

    def _forget_expired(self, monotonic: float) -> None:
        while self._issued:
            nonce, issued = next(iter(self._issued.items()))
            if monotonic - issued <= self.lifetime:
                break
            del self._issued[nonce]
