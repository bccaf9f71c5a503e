"""The callflow app on the bus: answers ``route_req`` for accounts with ``park`` when the
dialed number matches one of the account's callflows (:mod:`actors.callflow.lookup`), and on
``route_win`` starts that call's executor.

A route_req without an Account-ID (a carrier call not yet assigned) is not ours: no answer.
A number that matches nothing gets no answer either, so call control answers 604 as Kazoo's
ecallmgr does when no app takes the call. A park whose route_win does not come within
``calls.route_win_timeout`` is forgotten (Kazoo's callflow waits 3 s).
"""

from __future__ import annotations

import logging
import time

from actors.callflow.context import CallflowContext
from actors.callflow.executor import CallflowExecutor
from actors.callflow.lookup import FlowMatch, is_authorized_caller, match_number
from bus import Binding, Delivery, Message
from bus.api.route import route_resp
from bus.listener import ListenerActor
from store import StoreError
from supervisors.api import start_child
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor, SupervisorError

__all__ = ["ExecutorSupervisor", "RouteListener"]

log = logging.getLogger("mirliton.callflow.routes")


class ExecutorSupervisor(Supervisor):
    def __init__(self, ctx: CallflowContext) -> None:
        super().__init__(
            [ChildSpec("executor", lambda req, win, match: CallflowExecutor(ctx, req, win, match),
                       restart="temporary", shutdown=2.0)],
            SupervisorFlags("simple_one_for_one", intensity=0, period=1.0),
            name="executors",
        )
        self.ctx = ctx

    def init(self) -> None:
        super().init()
        self.ctx.executors = self.ref


class RouteListener(ListenerActor):
    bindings = (Binding("callmgr", "route.req.#"),)
    responders = {
        ("dialplan", "route_req"): "on_route_req",
        ("dialplan", "route_win"): "on_route_win",
    }
    targeted = True

    def __init__(self, ctx: CallflowContext) -> None:
        super().__init__(ctx.bus)
        self.ctx = ctx
        self.pending: dict[str, tuple[float, Message, FlowMatch]] = {}

    def on_route_req(self, msg: Message, delivery: Delivery) -> None:
        ccvs = msg.get("Custom-Channel-Vars") or {}
        account_id = ccvs.get("Account-ID")
        if not account_id:
            return
        number = str(msg.get("Request", "")).split("@", 1)[0]
        try:
            callflows = self.ctx.callflows.callflows(str(account_id))
        except StoreError as error:
            log.error("cannot read callflows of %s: %s", account_id, error)
            return
        found = match_number(callflows, number, is_authorized_caller(ccvs))
        if found is None:
            log.info("no callflow for %s in account %s", number, account_id)
            return
        now = time.monotonic()
        self._sweep(now)
        self.pending[str(msg["Call-ID"])] = (now, msg, found)
        self.reply(msg, route_resp.build({"Method": "park",
                                          "Custom-Channel-Vars": {"Account-ID": account_id}}))

    def on_route_win(self, msg: Message, delivery: Delivery) -> None:
        entry = self.pending.pop(str(msg.get("Call-ID")), None)
        if entry is None:
            log.info("route_win for a call we did not park: %s", msg.get("Call-ID"))
            return
        _, route_req, match = entry
        sup = self.ctx.executors
        if sup is None:
            return
        try:
            start_child(sup, (route_req, msg, match))
        except SupervisorError as error:
            log.error("cannot start the callflow of %s: %s", msg.get("Call-ID"), error)

    def _sweep(self, now: float) -> None:
        limit = self.ctx.config.calls.route_win_timeout
        for call_id in [c for c, (t, _, _) in self.pending.items() if now - t > limit]:
            del self.pending[call_id]
