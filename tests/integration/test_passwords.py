"""Passwords are stored as argon2id at or above the ASVS 5.0 minimum in production settings."""

from __future__ import annotations

from argon2 import extract_parameters
from flask import Flask

from portal.core.config import SETTINGS
from portal.features.identity.passwords import hash_password, verify_password


def test_production_parameters_meet_the_asvs_minimum(app_factory) -> None:  # type: ignore[no-untyped-def]
    app: Flask = app_factory(
        PORTAL_ARGON2_TIME_COST=SETTINGS["ARGON2_TIME_COST"][0],
        PORTAL_ARGON2_MEMORY_KIB=SETTINGS["ARGON2_MEMORY_KIB"][0],
    )
    with app.app_context():
        stored = hash_password("correct horse battery staple")
        assert stored.startswith("$argon2id$")
        parameters = extract_parameters(stored)
        assert parameters.time_cost >= 2 and parameters.memory_cost >= 19 * 1024
        assert parameters.parallelism == 1
        assert verify_password(stored, "correct horse battery staple")
        assert not verify_password(stored, "correct horse battery stapler")
        assert not verify_password(None, "anything at all here")
