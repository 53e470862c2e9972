"""Pure billing rules: assembling an invoice, deferred revenue (no Flask, no database)."""
