"""LwM2M registration of a bootstrapped lock at the AS, sans-IO (OMA LwM2M Transport 1.1, Registration Interface;
issue #7: the lock registers at ``/rd`` of the AS's DTLS endpoint with its newest operational identity).

=================  ======================================================  ===========  ====================
operation          CoAP                                                    success      here
=================  ======================================================  ===========  ====================
Register           ``POST /rd?ep={name}&lt={lifetime}&lwm2m=1.1&b=U``      2.01 +       :func:`register_query`,
                   payload link-format ``</1/0>,</3/0>``                   Location     :func:`object_links`
Update             ``POST /{location}`` (empty: nothing changed)           2.04         before ``lifetime``
De-register        ``DELETE /{location}``                                  2.02         at shutdown
=================  ======================================================  ===========  ====================

:func:`update_delay` says when to send the Update (half the lifetime, so one lost Update still leaves time), and
:class:`Backoff` how long to wait between failed attempts (exponential with a cap; bounded in number, or without end
under a ceiling).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ace_core.lwm2m.registry import ObjectId

__all__ = [
    "BINDING",
    "LWM2M_VERSION",
    "REGISTER_PATH",
    "Backoff",
    "object_links",
    "register_query",
    "update_delay",
]

#: The LwM2M version the lock registers with, and its binding (UDP).
LWM2M_VERSION: Final = "1.1"
BINDING: Final = "U"
#: ``/rd``: the registration interface's path.
REGISTER_PATH: Final = ("rd",)
#: Shortest time between two Updates (seconds), whatever the lifetime.
MIN_UPDATE_DELAY: Final = 1.0


def register_query(endpoint: str, lifetime: int) -> tuple[str, ...]:
    """The Register request's Uri-Query options (one per item; aiocoap percent-encodes nothing inside options)."""
    return (f"ep={endpoint}", f"lt={lifetime}", f"lwm2m={LWM2M_VERSION}", f"b={BINDING}")


def object_links(server_instance: int) -> bytes:
    """The Register payload (RFC 6690 link-format): the Server instance and the Device object instance."""
    return f"</{int(ObjectId.SERVER)}/{server_instance}>,</{int(ObjectId.DEVICE)}/0>".encode()


def update_delay(lifetime: float) -> float:
    """Seconds after a successful Register or Update to send the next Update: half the lifetime."""
    return max(MIN_UPDATE_DELAY, lifetime / 2)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``initial``, doubled each time, at most ``maximum``; ``attempts`` in all. With a
    ``ceiling``, the delays go on without end after those: still doubled, at most ``ceiling`` (and no delay is
    longer than ``ceiling``).

    >>> list(Backoff(initial=1, maximum=5, attempts=5))
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> from itertools import islice
    >>> list(islice(Backoff(initial=1, maximum=5, attempts=5, ceiling=30), 9))
    [1.0, 2.0, 4.0, 5.0, 5.0, 10.0, 20.0, 30.0, 30.0]
    """

    initial: float = 5.0
    maximum: float = 300.0
    attempts: int = 8
    ceiling: float | None = None

    def __iter__(self) -> Iterator[float]:
        cap = float(self.maximum) if self.ceiling is None else min(float(self.maximum), float(self.ceiling))
        delay = float(self.initial)
        for _ in range(self.attempts):
            yield min(delay, cap)
            delay *= 2
        if self.ceiling is None:
            return
        delay = min(delay, float(self.maximum) * 2)  # go on from where the bounded attempts stopped
        while True:
            yield min(delay, float(self.ceiling))
            delay = min(delay * 2, float(self.ceiling))
