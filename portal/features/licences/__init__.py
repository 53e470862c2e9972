"""Licences: subscriptions, licence changes and their provisioning, the customer agreement,
credit hold."""
