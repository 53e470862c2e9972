"""The core's own hook implementations, registered in every app like any plugin.

The periodic jobs every deployment needs (outbox sweep, session purge, billing schedule, payments
reconciliation) and the core's outbox kinds mapped to each capability's handlers.
"""
