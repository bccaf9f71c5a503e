"""The edge: the node's public SIP face (Kazoo's Kamailio as SBC and registrar).

:class:`actors.edge.role.EdgeRole` is the process; guards (:mod:`actors.edge.guards`) and
registration bindings (:mod:`actors.edge.bindings`) are sans-I/O and tested on their own.
Message-waiting indication (:mod:`actors.edge.mwi`): ``mwi_update`` from the bus becomes an
unsolicited NOTIFY ``message-summary`` to the AOR's registered phones, a new binding gets its
owner's counts, and a SUBSCRIBE to ``message-summary`` is answered with them.

Configuration (``[edge]`` and ``[registrar]`` sections, or ``MIRLITON_EDGE__<KEY>``):

=============================  =========  ==================================================
key                            default    meaning
=============================  =========  ==================================================
edge.trusted_cidrs             []         sources that skip the guards and authentication
edge.flood_requests            50         initial requests per source IP per window ...
edge.flood_window              2.0        ... of this many seconds, then silent drop ...
edge.flood_release             4.0        ... until the rate stays under it this long
edge.auth_failures             4          failed digests per user+IP+port within ...
edge.auth_failure_window       300.0      ... this many seconds: 403 + Retry-After ...
edge.lockout_retry_after       3600       ... with this value; cleared on success
edge.scanner_user_agents       Kazoo's    User-Agent substrings dropped silently
edge.max_forwards              10         Max-Forwards put on requests without one
edge.authn_timeout             2.5        seconds to wait for the registrar's authn_resp
edge.credentials_ttl           7200.0     cached credentials (re-REGISTERs skip the bus)
edge.negative_credentials_ttl  60.0       cached "unknown user" answers
edge.nonce_secret              ""         shared digest nonce secret (a cluster's edges);
                                          empty: kept in ``data_dir/edge/nonce.secret``
edge.nonce_lifetime            300.0      seconds before a nonce is stale
edge.digest_algorithms         ["MD5"]    challenges offered, strongest first
edge.sanity_drops              false      drop insane requests instead of answering 400
edge.udp_receive_buffer        4 MiB      SO_RCVBUF of the UDP listeners
registrar.min_expires          300        below: 423 Interval Too Brief + Min-Expires
registrar.default_expires      600        when the REGISTER names none
registrar.max_expires          3600       longer requests are granted this
registrar.max_contacts         10         bindings per AOR (the oldest goes)
=============================  =========  ==================================================
"""

from __future__ import annotations

__all__: list[str] = []
