"""Billing use cases, one module per part (contracts, schedule, run, documents, queries)."""
