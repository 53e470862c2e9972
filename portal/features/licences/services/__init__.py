"""Licence use cases: subscriptions and changes, the agreement, provisioning, pacing."""
