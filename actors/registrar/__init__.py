"""The registrar app: answers ``authn_req`` from the store and watches device documents
(Kazoo's registrar/reg app). :class:`actors.registrar.role.RegistrarRole` is the process."""

from __future__ import annotations

__all__: list[str] = []
