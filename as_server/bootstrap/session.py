"""The server-driven bootstrap sequence after a Bootstrap-Request, as a sans-IO state machine (OMA LwM2M Transport
1.2, Bootstrap Interface; ref. §1; Leshan's ``BootstrapHandler`` splits it the same way).

After answering the Bootstrap-Request with 2.04, the server runs::

    [Bootstrap-Delete /]            only with BootstrapPolicy(delete_all_first=True); 2.02
    Bootstrap-Discover /            Accept 40; 2.05 + link-format -> choose_instance_ids()
    Bootstrap-Delete /0/x, /1/y     only for a re-bootstrap (the instances already holding this SSID); 2.02
    Bootstrap-Write /0/x            TLV (or SenML CBOR); 2.04
    Bootstrap-Write /1/y            2.04
    Bootstrap-Finish (POST /bs)     2.04; 4.06 = the client found the configuration inconsistent

The session hands out one :class:`~ace_core.lwm2m.messages.Operation` at a time and is fed the device's
response code (``class*100+detail``) and payload; any code but the step's success code, a Discover answer that does
not parse, a timeout, or a response later than EXCHANGE_LIFETIME after the request (the client has given up by
then; ref. §1 "Timing") ends it with :class:`~ace_core.lwm2m.errors.BootstrapFailed`. Time is a parameter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

from ace_core.lwm2m.errors import BootstrapFailed, LinkFormatError
from ace_core.lwm2m.messages import BootstrapRequest, Operation, OperationKind
from ace_core.lwm2m.objects import ServerAccount
from ace_core.lwm2m.registry import EXCHANGE_LIFETIME, Lwm2mContentFormat, ObjectId
from as_server.bootstrap.discover import Discovery, InstancePlan, choose_instance_ids, parse_discover

__all__ = ["BootstrapPolicy", "BootstrapSession", "SessionState"]

_WRITE_FORMATS = (Lwm2mContentFormat.TLV, Lwm2mContentFormat.SENML_CBOR)


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapPolicy:
    """How the server provisions a device.

    :param delete_all_first: send ``DELETE /`` before the Discover, removing every account but the bootstrap one
        (and any other object instance the client lets go). The default keeps other servers' accounts.
    :param write_format: TLV (11542; every client tested accepted it whatever its ``pct``, ref. §1) or SenML CBOR.
    :param wrap_instances: TLV only: wrap the resources in an Object Instance TLV (both forms work, ref. §3).
    """

    delete_all_first: bool = False
    write_format: Lwm2mContentFormat = Lwm2mContentFormat.TLV
    wrap_instances: bool = False

    def __post_init__(self) -> None:
        if self.write_format not in _WRITE_FORMATS:
            raise ValueError(f"write_format must be TLV or SenML CBOR, got {self.write_format!r}")


class SessionState(Enum):
    """Where a :class:`BootstrapSession` is."""

    NEW = "new"
    WAITING = "waiting for the device"
    DONE = "done"
    FAILED = "failed"


class BootstrapSession:
    """One device's bootstrap after its Bootstrap-Request: provisions ``account`` into free (or its own previous)
    instances, never touching the bootstrap account.

    :param request: the parsed Bootstrap-Request (its endpoint names the device in logs and failures).
    :param account: what to write (:func:`~ace_core.lwm2m.objects.build_server_account`).
    """

    def __init__(
        self, request: BootstrapRequest, account: ServerAccount, *, policy: BootstrapPolicy | None = None
    ) -> None:
        self.request = request
        self.account = account
        self.policy = policy if policy is not None else BootstrapPolicy()
        self.state = SessionState.NEW
        #: The operation sent and not yet answered.
        self.pending: Operation | None = None
        #: Every answered operation with its response code, in order.
        self.completed: list[tuple[Operation, int]] = []
        self.discovery: Discovery | None = None
        self.plan: InstancePlan | None = None
        self.failure: BootstrapFailed | None = None
        self._queue: deque[Operation] = deque()
        self._sent_at: float | None = None

    # -- driving ---------------------------------------------------------------------------------------------

    def start(self, *, now: float) -> Operation:
        """The first operation, to send right after answering the Bootstrap-Request with 2.04."""
        if self.state is not SessionState.NEW:
            raise RuntimeError(f"session already {self.state.value}")
        if self.policy.delete_all_first:
            self._queue.append(Operation.delete())
        self._queue.append(Operation.discover())
        return self._send_next(now)

    def on_response(self, code: int, payload: bytes = b"", *, now: float) -> Operation | None:
        """Feed the device's answer to :attr:`pending`; return the next operation, or ``None`` when the
        Bootstrap-Finish succeeded (:attr:`state` is then ``DONE``).

        :param code: the response code as ``class*100+detail`` (2.05 is ``205``; see :class:`~ace_core.status.Status`).
        :raises BootstrapFailed: the code is not the step's success code, the Discover answer does not parse or
            leaves no room, or the answer came after EXCHANGE_LIFETIME. :attr:`state` is then ``FAILED``.
        """
        op = self._expect_pending()
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 799 or code % 100 > 31:
            raise ValueError(f"{code!r} is not a response code in class*100+detail form")
        assert self._sent_at is not None
        if now - self._sent_at > EXCHANGE_LIFETIME:
            self._fail(
                op,
                code,
                f"answered after EXCHANGE_LIFETIME ({EXCHANGE_LIFETIME} s); the client has abandoned the bootstrap",
            )
        if code != op.success:
            self._fail(op, code, op.reason(code))
        self.completed.append((op, code))
        self.pending = None
        if op.kind is OperationKind.DISCOVER:
            self._plan(op, code, payload)
        elif op.kind is OperationKind.FINISH:
            self.state = SessionState.DONE
            return None
        return self._send_next(now)

    def on_timeout(self, *, now: float) -> None:
        """The transport gave up waiting for :attr:`pending` (no response after CoAP retransmissions).

        :raises BootstrapFailed: always; :attr:`state` is then ``FAILED``.
        """
        op = self._expect_pending()
        self._fail(op, None, "no response from the device")

    def deadline(self) -> float | None:
        """When the client stops waiting for the next command: EXCHANGE_LIFETIME after the last one sent."""
        return (
            None
            if self._sent_at is None or self.state is not SessionState.WAITING
            else (self._sent_at + EXCHANGE_LIFETIME)
        )

    # -- internals -------------------------------------------------------------------------------------------

    def _expect_pending(self) -> Operation:
        if self.state is not SessionState.WAITING or self.pending is None:
            raise RuntimeError(f"no operation is pending (session {self.state.value})")
        return self.pending

    def _send_next(self, now: float) -> Operation:
        op = self._queue.popleft()
        self.pending = op
        self._sent_at = now
        self.state = SessionState.WAITING
        return op

    def _fail(self, op: Operation, code: int | None, reason: str) -> NoReturn:
        failure = BootstrapFailed(f"{op} to {self.request.endpoint}", code, reason)
        self.failure = failure
        self.state = SessionState.FAILED
        self.pending = None
        self._queue.clear()
        raise failure

    def _plan(self, op: Operation, code: int, payload: bytes) -> None:
        try:
            self.discovery = parse_discover(payload)
        except LinkFormatError as exc:
            self._fail(op, code, f"the Discover answer is not valid link-format: {exc.detail}")
        assert self.discovery is not None
        plan = choose_instance_ids(self.discovery, self.account.short_server_id)
        self.plan = plan
        for path in plan.delete:
            self._queue.append(Operation.delete(path))
        security_path = (int(ObjectId.SECURITY), plan.security_instance_id)
        server_path = (int(ObjectId.SERVER), plan.server_instance_id)
        fmt = self.policy.write_format
        if fmt is Lwm2mContentFormat.TLV:
            wrap = self.policy.wrap_instances
            security = self.account.security.to_tlv(plan.security_instance_id, wrap=wrap)
            server = self.account.server.to_tlv(plan.server_instance_id, wrap=wrap)
        else:
            security = self.account.security.to_senml_cbor(plan.security_instance_id)
            server = self.account.server.to_senml_cbor(plan.server_instance_id)
        self._queue.append(Operation.write(security_path, security, fmt))
        self._queue.append(Operation.write(server_path, server, fmt))
        self._queue.append(Operation.finish())
