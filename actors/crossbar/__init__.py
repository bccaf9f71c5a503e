"""Crossbar: Kazoo's REST API v2 (``/v2/accounts/{account_id}/{resource}[/{id}]``).

Layout (a Wazo-style app folder):
- ``service.py``: what the API does to documents (accounts, users, devices, callflows, ...),
  Kazoo's semantics, no HTTP;
- ``resources.py``: falcon responders and the route table; ``openapi.py``: the OpenAPI 3.1
  document built from that table and from the schemas in ``schemas/`` (the store's, reused);
- ``auth.py``: JWT tokens, user_auth / api_auth, tenancy checks; ``errors.py``: API errors with
  a stable ``error_id``; ``notifier.py``: doc_created/edited/deleted on the bus; ``live.py``:
  registrations and channels asked over the bus; ``audio.py``: voicemail audio in the format
  asked for (sox); ``metrics.py``; ``app.py``: the WSGI app;
  ``role.py``: the ``crossbar`` role process.

Why falcon: it is a plain WSGI framework (so it runs on gevent's pywsgi with no threads, like
the ops role), it is the fastest of the pure-Python WSGI frameworks (the API's hot path is a
token check and one store read), its router compiles URI templates into code and hands back the
matched template (``req.uri_template``), which is exactly the bounded ``route`` label the
metrics need, and its responders per HTTP method (``on_put``, ``on_patch``, ...) map one to one
onto Kazoo's verbs, with a 405 for anything else. Bottle has no route template on the request
and a global default app; werkzeug is routing only and would leave envelopes and error
handling to hand-written glue.
"""

from __future__ import annotations

from actors.crossbar.app import CrossbarApp, make_app

__all__ = ["CrossbarApp", "make_app"]
