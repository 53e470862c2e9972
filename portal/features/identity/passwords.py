"""Password hashing with argon2id at or above the OWASP/ASVS minimum (t=2, m=19 MiB, p=1)."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID)


def hasher() -> PasswordHasher:
    config = current_app.config
    return _hasher(config["PORTAL_ARGON2_TIME_COST"], config["PORTAL_ARGON2_MEMORY_KIB"])


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; spends the same work when there is no stored hash."""
    candidate = stored_hash or _dummy_hash()
    try:
        ok = hasher().verify(candidate, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


def _dummy_hash() -> str:
    # hashing a throwaway value keeps "no such account" as slow as "wrong password"
    cache = current_app.extensions.setdefault("portal_dummy_hash", {})
    key = (
        current_app.config["PORTAL_ARGON2_TIME_COST"],
        current_app.config["PORTAL_ARGON2_MEMORY_KIB"],
    )
    if key not in cache:
        cache[key] = hasher().hash("not a real password, only spends time")
    return str(cache[key])
