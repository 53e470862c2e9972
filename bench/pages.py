"""Page benchmark (issue 2): signed-in portal pages against a minimal Flask + SQLAlchemy page.

Run from the repository root: ``.venv/bin/python bench/pages.py`` (``make bench``). It builds
a throw-away PostgreSQL database, migrates it and loads the demo data, serves the portal and the
baseline (``bench/baseline_app.py``) with gunicorn (2 sync workers each), signs in as the demo
administrator and loads each page with wrk at 8 connections. One line per page goes to stdout
(``bench: <page> rps=… p99_ms=… baseline_rps=… baseline_p99_ms=… ratio=…``: the baseline's
p99 is wrk's, from the same command, so a page's p99 can be read against what the bare page
needs on the same machine), then the verdict against the target; progress goes to stderr.

The exit code is 0 whether or not the target is met (this is a measurement) and non-zero when
the run itself breaks: no wrk, a server that does not start, a failed sign-in, or error
responses under load.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"  # the demo partner answers on this host
DATABASE = "portal_bench"
SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"

COOKIE_NAME = "portal_session"  # PORTAL_INSECURE_COOKIES=1: no __Host- prefix on plain http
LOGIN_EMAIL = "admin@fabrikam.example"
LOGIN_PASSWORD = "demo-portal-2026"
CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

THREADS = 1
CONNECTIONS = 8
WARMUP = "2s"
DURATION = "10s"
TARGET_RATIO = 0.35
TARGET_P99_MS = 50.0
START_TIMEOUT_S = 30.0  # from starting gunicorn to a first 200
FIRST_ANSWER_TIMEOUT_S = 10.0  # per try: a cold worker's first request may take a while


class BenchError(Exception):
    """The run broke: its numbers would mean nothing."""


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    marker: str  # text only the signed-in page shows, so a login redirect is never measured


PAGES = (
    Page("dashboard", "/", "Welcome, Alex Admin"),
    Page("account", "/account/", "Users and roles"),
)
BASELINE_PATH = "/table"


@dataclass(frozen=True)
class Load:
    """What wrk reports for one URL."""

    rps: float
    p99_ms: float
    requests: int
    bytes_read: float
    errors: int  # responses with status >= 400 ("Non-2xx or 3xx responses")


@dataclass(frozen=True)
class Result:
    page: Page
    load: Load
    baseline: Load

    @property
    def ratio(self) -> float:
        return round(self.load.rps / self.baseline.rps, 2)

    @property
    def p99_ms(self) -> float:
        return round(self.load.p99_ms, 1)

    def line(self) -> str:
        return (
            f"bench: {self.page.name} rps={self.load.rps:.0f} p99_ms={self.p99_ms:.1f} "
            f"baseline_rps={self.baseline.rps:.0f} baseline_p99_ms={self.baseline.p99_ms:.1f} "
            f"ratio={self.ratio:.2f}"
        )

    def failures(self) -> list[str]:
        failed = []
        if self.ratio < TARGET_RATIO:
            failed.append(f"{self.page.name} ratio={self.ratio:.2f}")
        if self.p99_ms >= TARGET_P99_MS:
            failed.append(f"{self.page.name} p99_ms={self.p99_ms:.1f}")
        return failed


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- tools and database -------------------------------------------------------------------


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and we are not root: run `apt-get install wrk`")
    log("wrk is missing; installing it with apt-get")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "install", "-y", "wrk"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "wrk"],
    ):
        subprocess.run(command, env=apt_env, check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("wrk is not installed and `apt-get install -y wrk` did not install it")


def admin_sql(statement: str) -> None:
    """Run one statement on the server's ``postgres`` database, outside a transaction."""
    engine = create_engine(f"{SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def create_database() -> None:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


# --- preparing and serving ----------------------------------------------------------------


def bench_env() -> dict[str, str]:
    """The environment of every command: ours, minus any PORTAL_* set outside, plus the run's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        PORTAL_DATABASE_URL=DATABASE_URL,
        PORTAL_SECRET_KEY=secrets.token_urlsafe(48),
        PORTAL_INSECURE_COOKIES="1",
        PORTAL_ENV="production",
        PORTAL_RATELIMIT_LOGIN_ACCOUNT="1000 per minute",
        PORTAL_RATELIMIT_LOGIN_IP="1000 per minute",
        BENCH_DATABASE_URL=DATABASE_URL,
    )
    return env


def run_step(command: list[str], env: dict[str, str]) -> None:
    log(" ".join(command))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


def prepare(env: dict[str, str]) -> None:
    flask = [str(BIN / "flask"), "--app", "app", "portal"]
    run_step([*flask, "migrate"], env)
    run_step([*flask, "demo"], env)
    run_step([str(BIN / "python"), "-m", "bench.baseline_app"], env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(app: str, env: dict[str, str], logs: Path, probe: str) -> Iterator[str]:
    """Run ``app`` under gunicorn (2 sync workers) until the block ends; yield its base URL.

    The block starts once ``GET probe`` has answered 200 (see :func:`wait_until_up`).
    """
    port = free_port()
    base = f"http://{HOST}:{port}"
    log_path = logs / f"gunicorn-{port}.log"
    command = [str(BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"{HOST}:{port}", app]
    log(" ".join(command))
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(process, f"{base}{probe}", log_path)
        yield base
    finally:
        stop(process)


def wait_until_up(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Wait for a first 200 from ``url``, at most START_TIMEOUT_S in all.

    Until then, a refused connection, a request that times out (a worker still booting or
    busy with its first request) or an error status only mean "not yet": the next try follows.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while True:
        if process.poll() is not None:
            raise BenchError(f"gunicorn exited ({process.returncode}):\n{tail(log_path)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(
                f"gunicorn did not answer GET {url} with 200 within {START_TIMEOUT_S:.0f}s "
                f"(last try: {last}):\n{tail(log_path)}"
            )
        try:
            answer = requests.get(url, timeout=min(FIRST_ANSWER_TIMEOUT_S, remaining))
        except requests.RequestException as error:  # refused, reset, timed out ...
            last = f"{type(error).__name__}: {error}"
        else:
            if answer.status_code == 200:
                return
            last = f"status {answer.status_code}"
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop, workers included
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- signing in ---------------------------------------------------------------------------


def sign_in(base: str) -> str:
    """Sign in through the real form; return the ``portal_session`` cookie's value."""
    with requests.Session() as http:
        form = http.get(f"{base}/login", timeout=10)
        if form.status_code != 200:
            raise BenchError(f"GET /login answered {form.status_code}")
        token = CSRF_FIELD.search(form.text)
        if token is None:
            raise BenchError("no csrf_token field on the sign-in page")
        fields = {"csrf_token": token.group(1), "email": LOGIN_EMAIL, "password": LOGIN_PASSWORD}
        answer = http.post(f"{base}/login", data=fields, allow_redirects=False, timeout=30)
    location = urlsplit(answer.headers.get("Location", "")).path
    if answer.status_code != 302 or location != "/":
        raise BenchError(
            f"sign-in failed: POST /login answered {answer.status_code} "
            f"to {location or 'nowhere'} (expected 302 to /)"
        )
    cookie = answer.cookies.get(COOKIE_NAME)
    if not cookie:
        raise BenchError(f"sign-in set no {COOKIE_NAME} cookie")
    return cookie


def check_page(base: str, page: Page, cookie: str) -> int:
    """Fetch ``page`` as wrk will (only the cookie); fail unless it is the signed-in page.

    Returns the body's size, to compare with what wrk reads.
    """
    answer = requests.get(
        f"{base}{page.path}",
        headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
        allow_redirects=False,
        timeout=10,
    )
    if answer.status_code != 200:
        raise BenchError(
            f"GET {page.path} with the session cookie answered "
            f"{answer.status_code} {answer.headers.get('Location', '')}".rstrip()
        )
    if page.marker not in answer.text:
        raise BenchError(f"GET {page.path} does not show {page.marker!r}: not signed in?")
    return len(answer.content)


# --- load ---------------------------------------------------------------------------------

TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
P99 = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
TOTALS = re.compile(r"(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read")
ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(binary: str, url: str, duration: str, cookie: str | None) -> str:
    command = [binary, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}", "--latency"]
    if cookie:
        command += ["-H", f"Cookie: {COOKIE_NAME}={cookie}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def parse_wrk(output: str) -> Load:
    rps, p99, totals = RPS.search(output), P99.search(output), TOTALS.search(output)
    if rps is None or p99 is None or totals is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    errors = ERRORS.search(output)
    return Load(
        rps=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * TIME_UNITS_MS[p99.group(2)],
        requests=int(totals.group(1)),
        bytes_read=float(totals.group(2)) * SIZE_UNITS[totals.group(3)],
        errors=int(errors.group(1)) if errors else 0,
    )


def measure(binary: str, url: str, body_size: int, cookie: str | None = None) -> Load:
    """Warm up, then measure ``url``; fail on error responses or suspiciously small ones."""
    log(f"loading {url} ({WARMUP} warm-up, {DURATION} measured, c={CONNECTIONS})")
    wrk(binary, url, WARMUP, cookie)
    output = wrk(binary, url, DURATION, cookie)
    load = parse_wrk(output)
    if load.requests == 0:
        raise BenchError(f"wrk completed no request on {url}:\n{output}")
    if load.errors:
        raise BenchError(f"{load.errors} error responses from {url}:\n{output}")
    # wrk counts a 302 to /login as success; a redirect is a few hundred bytes, the page is not
    if load.bytes_read / load.requests < body_size / 2:
        raise BenchError(f"responses from {url} are smaller than the page: redirects?\n{output}")
    return load


def measure_portal(binary: str, env: dict[str, str], logs: Path) -> dict[str, Load]:
    with serve("app:app", env, logs, probe="/login") as base:
        cookie = sign_in(base)
        sizes = {page.name: check_page(base, page, cookie) for page in PAGES}
        loads = {
            page.name: measure(binary, f"{base}{page.path}", sizes[page.name], cookie)
            for page in PAGES
        }
        for page in PAGES:  # still signed in at the end: nothing was measured logged out
            check_page(base, page, cookie)
    return loads


def measure_baseline(binary: str, env: dict[str, str], logs: Path) -> Load:
    with serve("bench.baseline_app:create_app()", env, logs, probe=BASELINE_PATH) as base:
        url = f"{base}{BASELINE_PATH}"
        answer = requests.get(url, timeout=10)
        if answer.status_code != 200 or answer.text.count("<tr>") != 51:
            raise BenchError(
                f"the baseline's {BASELINE_PATH} is not the 50-row table ({answer.status_code})"
            )
        return measure(binary, url, len(answer.content))


# --- the run ------------------------------------------------------------------------------


def verdict(results: list[Result]) -> str:
    failed = [failure for result in results for failure in result.failures()]
    target = f"ratio>={TARGET_RATIO} p99_ms<{TARGET_P99_MS:g} at c={CONNECTIONS}"
    outcome = f"FAIL ({', '.join(failed)})" if failed else "PASS"
    return f"bench: pages target {target}: {outcome}"


def run() -> list[Result]:
    binary = find_wrk()
    env = bench_env()
    log(f"creating database {DATABASE}")
    create_database()
    try:
        prepare(env)
        with tempfile.TemporaryDirectory(prefix="portal-bench-") as logs:
            loads = measure_portal(binary, env, Path(logs))
            baseline = measure_baseline(binary, env, Path(logs))
    finally:
        log(f"dropping database {DATABASE}")
        drop_database()
    return [Result(page, loads[page.name], baseline) for page in PAGES]


def main() -> int:
    try:
        results = run()
    except BenchError as error:
        log(f"error: {error}")
        return 1
    for result in results:
        print(result.line())
    print(verdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
