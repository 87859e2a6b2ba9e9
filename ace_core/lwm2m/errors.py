"""Errors of the bootstrap adapter's protocol core (STYLE §3.3).

Every decoder of device- or network-supplied bytes raises exactly one class, a subclass of
:class:`BootstrapFormatError` (itself an :class:`~ace_core.errors.WireFormatError`, hence ``ValueError`` and
rendered as 4.00 at the transport's single catch site). A bootstrap exchange that the device answers with an
unexpected code ends in :class:`BootstrapFailed`, which names the step, the code and why.
"""

from __future__ import annotations

from ace_core.errors import AceError, WireFormatError
from ace_core.status import Status

__all__ = [
    "BootstrapFailed",
    "BootstrapFormatError",
    "InvalidBootstrapRequest",
    "LinkFormatError",
    "ObjectError",
    "SenmlError",
    "TlvError",
]


class BootstrapFormatError(WireFormatError):
    """Bytes or text from a device could not be decoded into the expected LwM2M structure."""


class TlvError(BootstrapFormatError):
    """Malformed OMA-TLV (OMA LwM2M Core §7.4.3), or a value that does not fit its resource type."""


class SenmlError(BootstrapFormatError):
    """Malformed SenML CBOR pack (RFC 8428 §4, §6) or LwM2M SenML usage (OMA LwM2M Core §7.4.5)."""


class LinkFormatError(BootstrapFormatError):
    """Malformed CoRE link-format (RFC 6690 §2) in a Bootstrap-Discover answer."""


class ObjectError(BootstrapFormatError):
    """A decoded object instance breaks its object definition (missing mandatory resource, wrong type)."""


class InvalidBootstrapRequest(BootstrapFormatError):
    """The ``/bs`` or ``/bspack`` query is invalid: answered 4.00 Bad Request (OMA LwM2M Transport, Table 5)."""

    status = Status.BAD_REQUEST


class BootstrapFailed(AceError):
    """The device refused or broke a step of the server-driven bootstrap sequence.

    :param step: the operation that failed (e.g. ``"Bootstrap-Write /0/2"``).
    :param code: the device's response code as ``class*100+detail`` (``406`` is 4.06), ``None`` for a timeout.
    :param reason: what that means, for logs and the console.
    """

    def __init__(self, step: str, code: int | None, reason: str) -> None:
        shown = "no response" if code is None else f"{code // 100}.{code % 100:02d}"
        super().__init__(f"{step}: {shown}: {reason}")
        self.step = step
        self.code = code
        self.reason = reason
