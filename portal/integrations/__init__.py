"""What the portal exchanges with the outside world: typed Protocols per kind of adapter,
the dataclasses they pass, and the registries that pick an adapter by configuration.

Nothing outside this package calls ``pm.hook.*``.
"""
