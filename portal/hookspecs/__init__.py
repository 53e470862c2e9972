"""The hook specifications of CSP Portal, one module per kind of integration.

Plugins implement hooks with :data:`hookimpl` (re-exported as ``portal.hookimpl``). Every hook
is named ``portal_*``; its docstring says what each argument is, what to return and how the
results are combined. Hooks *register* adapters or *react* to events; business operations go
through the adapters' typed Protocols in :mod:`portal.integrations`.
"""

from __future__ import annotations

import pluggy

PROJECT = "portal"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
