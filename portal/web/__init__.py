"""Blueprints and web plumbing. Views are thin: they parse, call a service, render."""
