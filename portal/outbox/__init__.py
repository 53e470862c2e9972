"""Background work: the outbox. It imports only portal.core: handlers, schedule entries and
periodic jobs reach it from plugins.py.

Work is first written to the ``outbox_item`` table in the same transaction as the change that
causes it; a task carries only the item's id, and the database row is the source of truth.
"""
