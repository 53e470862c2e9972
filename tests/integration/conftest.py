"""Fixtures shared by the integration tests of one area."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from tests.conftest import BACKENDS, Mailbox
from tests.integration.payments_support import payments_apps


@pytest.fixture(params=BACKENDS)
def payment_apps(
    request: pytest.FixtureRequest,
    smtp_server: tuple[int, Mailbox],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Flask]]:
    """Makes apps on the payment tests' own database, on each backend (see
    :func:`tests.integration.payments_support.payments_apps`)."""
    yield from payments_apps(request.param, smtp_server, tmp_path_factory)
