"""One executor actor per call (Kazoo's cf_exe): walks the callflow tree
``{module, data, children}`` from the matched callflow's ``flow``.

Each node's action (:mod:`actors.callflow.actions`) returns the branch to take; the executor
takes ``children[key]``, falling back to ``children["_"]``; no child ends the walk. A loop
guard stops after ``MAX_BRANCH_COUNT`` (50) steps, as Kazoo's. When the walk ends with the
call neither bridged nor answered elsewhere, the executor hangs it up (cf_exe:stop). Once a
bridge is up (or the call joined a conference) the executor exits: the call lives on in its
calls shard, so a dead callflow process never drops a connected call.

Executors are temporary children of a ``simple_one_for_one`` supervisor: a crash ends that
call's logic only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from actors.callflow.actions import action
from actors.callflow.call import Call, CallEnded, CallEvent
from actors.callflow.context import CallflowContext
from actors.callflow.lookup import FlowMatch
from actors.kernel import Actor, current_call_id
from bus import BusError

__all__ = ["MAX_BRANCH_COUNT", "CallflowExecutor"]

log = logging.getLogger("mirliton.callflow.exe")

MAX_BRANCH_COUNT = 50


@dataclass(frozen=True, slots=True)
class _Run:
    pass


class CallflowExecutor(Actor):
    def __init__(self, ctx: CallflowContext, route_req: dict[str, Any], route_win: dict[str, Any],
                 match: FlowMatch) -> None:
        self.ctx = ctx
        self.route_req = route_req
        self.route_win = route_win
        self.match = match
        self.call_id = str(route_req["Call-ID"])

    def init(self) -> None:
        current_call_id.set(self.call_id)
        ccvs = {**(self.route_req.get("Custom-Channel-Vars") or {}),
                **(self.route_win.get("Custom-Channel-Vars") or {})}
        self.call = Call(
            executor=self,
            store=self.ctx.store,
            bus=self.ctx.bus,
            call_id=self.call_id,
            control_queue=str(self.route_win["Control-Queue"]),
            account_id=str(ccvs.get("Account-ID") or ""),
            request_number=str(self.route_req.get("Request", "")).split("@", 1)[0],
            ccvs=ccvs,
            caller_id_name=str(self.route_req.get("Caller-ID-Name") or ""),
            caller_id_number=str(self.route_req.get("Caller-ID-Number") or ""),
            capture_group=self.match.capture_group,
            capture_groups=dict(self.match.capture_groups),
        )
        self.ctx.events.subscribe(self.call_id, self.ref)
        self.ref.send(_Run())

    def terminate(self, reason: Any) -> None:
        self.ctx.events.unsubscribe(self.call_id, self.ref)

    def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, _Run):
            self.run()
            self.stop()
        elif isinstance(msg, CallEvent):
            pass  # events nobody waited for

    def run(self) -> None:
        call = self.call
        node: dict[str, Any] | None = self.match.callflow.get("flow")
        steps = 0
        try:
            while node is not None:
                steps += 1
                if steps > MAX_BRANCH_COUNT:
                    log.warning("callflow loop guard: %d branches, hanging up", MAX_BRANCH_COUNT)
                    break
                module = str(node.get("module") or "")
                data = node.get("data") or {}
                handler = action(module)
                if data.get("skip_module") or handler is None:
                    if handler is None:
                        log.warning("unknown callflow action %r: skipped", module)
                    key: Any = "_"
                else:
                    log.info("callflow action %s", module)
                    call.children = node.get("children") or {}
                    key = handler(data, call)
                if key is None:
                    break
                if isinstance(key, dict):
                    node = key
                    continue
                children = node.get("children") or {}
                node = children.get(key) or children.get("_")
        except CallEnded:
            log.info("caller hung up during the callflow")
            return
        except BusError as error:
            log.error("callflow stopped: %s", error)
        if not call.bridged and not call.in_conference and not call.ended:
            try:
                call.hangup("NORMAL_CLEARING")
            except BusError as error:
                log.warning("cannot hang up: %s", error)
