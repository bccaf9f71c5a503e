"""The call as the callflow actions see it (Kazoo's kapps_call + kapps_call_command).

Commands go to the call's Control-Queue on ``callctl``; call events come back to the
executor's mailbox (:class:`CallEvent`). Blocking helpers (``bridge``) wait for them with a
selective receive, as Kazoo's ``b_*`` commands do; a CHANNEL_DESTROY of the call while waiting
raises :class:`CallEnded`, which ends the executor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus.api.dialplan import COMMANDS
from bus.messages import Message
from store import NotFound, Store
from store.kazoo import ACCOUNTS_DB, account_db_name

if TYPE_CHECKING:
    from actors.callflow.executor import CallflowExecutor

__all__ = ["BridgeResult", "Call", "CallEnded", "CallEvent"]

log = logging.getLogger("mirliton.callflow.call")


class CallEnded(Exception):
    """The caller's leg is gone (CHANNEL_DESTROY)."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    msg: Message


@dataclass(frozen=True, slots=True)
class BridgeResult:
    ok: bool
    cause: str = ""
    code: str = ""

    @property
    def sip_code(self) -> str | None:
        return self.code if self.code.startswith("sip:") else None


@dataclass
class Call:
    executor: CallflowExecutor
    store: Store
    bus: Any
    call_id: str
    control_queue: str
    account_id: str
    request_number: str
    ccvs: dict[str, Any]
    caller_id_name: str
    caller_id_number: str
    capture_group: str | None = None
    capture_groups: dict[str, str] = field(default_factory=dict)
    kvs: dict[str, Any] = field(default_factory=dict)
    bridged: bool = False
    ended: bool = False
    _account: dict[str, Any] | None = None

    # -- documents -----------------------------------------------------------------------------

    @property
    def account_db(self) -> str:
        return account_db_name(self.account_id)

    @property
    def account(self) -> dict[str, Any]:
        if self._account is None:
            try:
                self._account = self.store.get(ACCOUNTS_DB, self.account_id)
            except NotFound:
                self._account = {}
        return self._account

    @property
    def realm(self) -> str:
        return str(self.account.get("realm") or "")

    def open_doc(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get(self.account_db, doc_id)
        except NotFound:
            return None

    # -- commands ------------------------------------------------------------------------------

    def command(self, application: str, **fields: Any) -> None:
        msg = COMMANDS[application].build({"Call-ID": self.call_id, **fields})
        self.bus.publish(msg, routing_key=self.control_queue)

    def answer(self) -> None:
        self.command("answer")

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.command("hangup", **{"Hangup-Cause": cause})
        self.ended = True

    def respond(self, code: int | str, message: str | None = None) -> None:
        fields: dict[str, Any] = {"Response-Code": str(code)}
        if message:
            fields["Response-Message"] = message
        self.command("respond", **fields)

    def set_channel_vars(self, ccvs: dict[str, Any]) -> None:
        self.ccvs.update(ccvs)
        self.command("set", **{"Custom-Channel-Vars": ccvs, "Custom-Call-Vars": {}})

    def bridge(self, endpoints: list[dict[str, Any]], *, timeout: float | None = None,
               strategy: str = "simultaneous", wait: float = 600.0) -> BridgeResult:
        if not endpoints:
            return BridgeResult(False, "USER_NOT_REGISTERED", "sip:480")
        fields: dict[str, Any] = {
            "Endpoints": endpoints,
            "Dial-Endpoint-Method": strategy,
            "Caller-ID-Name": self.caller_id_name,
            "Caller-ID-Number": self.caller_id_number,
        }
        if timeout:
            fields["Timeout"] = int(timeout)
        self.command("bridge", **fields)
        while True:
            msg = self.wait_event(lambda m: m.get("Event-Name") == "CHANNEL_BRIDGE" or (
                m.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                and m.get("Application-Name") == "bridge"), wait)
            if msg is None:
                return BridgeResult(False, "NO_ANSWER", "sip:480")
            if msg["Event-Name"] == "CHANNEL_BRIDGE":
                self.bridged = True
                return BridgeResult(True, "SUCCESS")
            return BridgeResult(False, str(msg.get("Application-Response") or msg.get(
                "Hangup-Cause") or "NORMAL_TEMPORARY_FAILURE"), str(msg.get("Hangup-Code") or ""))

    # -- events --------------------------------------------------------------------------------

    def wait_event(self, predicate: Any, timeout: float) -> Message | None:
        """The next event of this call that ``predicate`` accepts; CallEnded on its destroy."""
        from actors.kernel import ReceiveTimeout

        def wanted(m: Any) -> bool:
            if not isinstance(m, CallEvent) or m.msg.get("Call-ID") != self.call_id:
                return False
            return m.msg.get("Event-Name") == "CHANNEL_DESTROY" or bool(predicate(m.msg))

        try:
            event: CallEvent = self.executor.receive(wanted, timeout)
        except ReceiveTimeout:
            return None
        if event.msg.get("Event-Name") == "CHANNEL_DESTROY":
            self.ended = True
            raise CallEnded(self.call_id)
        return event.msg
