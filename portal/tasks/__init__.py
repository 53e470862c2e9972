"""Background work: the outbox, the Celery app and its tasks, and the periodic schedule.

Work is first written to the ``outbox_item`` table in the same transaction as the change that
causes it; a task carries only the item's id, and the database row is the source of truth.
"""
