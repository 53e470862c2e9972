"""Payment use cases: the gateway, pay now and autopay, saved cards, payment events."""
