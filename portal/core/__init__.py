"""The shared kernel: settings, the database, money, roles, formatting, tenant scoping.

It imports nothing else of the portal; everything else may import it.
"""
