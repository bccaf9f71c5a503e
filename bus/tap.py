"""Watch messages go by, for debugging: ``python -m bus.tap [--url U] [--data-dir D] EXCHANGE:KEY...``

Binds a private queue to each ``exchange:routing-key`` (default: every Kazoo exchange with
``#``, which on direct exchanges means only the literal key ``#``) and prints each message
as one JSON line with its exchange and routing key, until interrupted. Invalid messages are
printed too, with the field that breaks their contract.

    python -m bus.tap --data-dir var 'callevt:call.*.abc' 'callmgr:route.req.#'
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

import gevent
import gevent.event

from bus import Binding, connect
from bus.errors import BusValidationError
from bus.routing import EXCHANGES
from bus.transport import Delivery


def parse_binding(text: str) -> Binding:
    exchange, sep, key = text.partition(":")
    if not sep or not exchange:
        raise argparse.ArgumentTypeError(f"{text!r} is not EXCHANGE:ROUTING-KEY")
    return Binding(exchange, key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bus.tap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MIRLITON_BUS__URL", "local"))
    parser.add_argument("--data-dir", default=os.environ.get("MIRLITON_NODE__DATA_DIR", "./var"))
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages")
    parser.add_argument("bindings", nargs="*", type=parse_binding)
    args = parser.parse_args(argv)
    bindings = args.bindings or [Binding(name, "#") for name in EXCHANGES]
    bus = connect(args.url, node=f"tap-{socket.gethostname()}", data_dir=args.data_dir)
    done = gevent.event.Event()
    seen = [0]

    def show(entry: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        seen[0] += 1
        if args.count and seen[0] >= args.count:
            done.set()

    def on_message(msg: dict[str, Any], delivery: Delivery) -> None:
        show({"exchange": delivery.exchange, "routing_key": delivery.routing_key, "message": msg})

    def on_invalid(error: BusValidationError, body: bytes, delivery: Delivery) -> None:
        show(
            {
                "exchange": delivery.exchange,
                "routing_key": delivery.routing_key,
                "invalid": error.field,
                "problem": error.problem,
                "body": body.decode(errors="replace"),
            }
        )

    bus.consume(bindings, on_message, on_invalid=on_invalid)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
