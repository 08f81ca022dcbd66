"""Shared fixtures: a real database (SQLite file, and PostgreSQL when configured), a key
file, the app behind a TestClient, and a phone that talks to it as Africa's Talking does.

PostgreSQL: set ``GATEWAY_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@
127.0.0.1:5432/postgres``); every database test then also runs on a fresh database
created there. Without it those runs are skipped with the reason "service missing".
``GATEWAY_TEST_REQUIRE_SERVICES=1`` (set by .ci/run) turns such skips into a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway.app import create_app
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.db import make_engine
from tests.handset import Handset
from tests.phone import Phone

REPO = Path(__file__).resolve().parent.parent
SERVICE_MISSING = "service missing"
POSTGRES_ENV = "GATEWAY_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nodb: does not need the database parametrisation")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With GATEWAY_TEST_REQUIRE_SERVICES=1, a test skipped for a missing service fails
    the run: CI must have PostgreSQL and Kannel."""
    if os.environ.get("GATEWAY_TEST_REQUIRE_SERVICES") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    missing = [
        rep for rep in reporter.stats.get("skipped", [])
        if SERVICE_MISSING in str(getattr(rep, "longrepr", ""))
    ]
    if missing:
        reporter.write_line(
            f"FAILED: {len(missing)} test(s) skipped for a missing service, and "
            "GATEWAY_TEST_REQUIRE_SERVICES=1 requires every service", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def postgres_server_url() -> str | None:
    return os.environ.get(POSTGRES_ENV)


def _fresh_postgres_database(server_url: str, template: str | None = None) -> tuple[str, str]:
    url = make_url(server_url)
    name = f"dannaya_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        copy = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(server_url: str, name: str) -> None:
    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str | None) -> Iterator[str | None]:
    """A PostgreSQL database migrated once; each test gets a copy (CREATE ... TEMPLATE)."""
    if not postgres_server_url:
        yield None
        return
    url, name = _fresh_postgres_database(postgres_server_url)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield name
    finally:
        _drop_postgres_database(postgres_server_url, name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                 postgres_server_url: str | None) -> Iterator[str]:
    """A fresh database at the latest migration: an SQLite file, or a new PostgreSQL
    database."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    if not postgres_server_url:
        pytest.skip(f"{SERVICE_MISSING}: PostgreSQL ({POSTGRES_ENV} is not set)")
    template = request.getfixturevalue("postgres_template")
    url, name = _fresh_postgres_database(postgres_server_url, template=template)
    try:
        yield url
    finally:
        _drop_postgres_database(postgres_server_url, name)


@pytest.fixture
def empty_postgres_url(postgres_server_url: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database with no tables at all."""
    if not postgres_server_url:
        pytest.skip(f"{SERVICE_MISSING}: PostgreSQL ({POSTGRES_ENV} is not set)")
    url, name = _fresh_postgres_database(postgres_server_url)
    try:
        yield url
    finally:
        _drop_postgres_database(postgres_server_url, name)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path,
                       postgres_server_url: str | None) -> Iterator[str]:
    """A fresh database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not postgres_server_url:
        pytest.skip(f"{SERVICE_MISSING}: PostgreSQL ({POSTGRES_ENV} is not set)")
    url, name = _fresh_postgres_database(postgres_server_url)
    try:
        yield url
    finally:
        _drop_postgres_database(postgres_server_url, name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        key_file=tmp_path / "gateway.keys",
        content_dir=REPO,
        send_rate=1000.0,
        quiet_hours="",  # broadcasts are not held whatever the hour the tests run at
        # A hop that meets a slow database answers the apology after this wait. The tests
        # of that wait set their own; the others must not fail because a loaded CI machine
        # (a PostgreSQL checkpoint after another test dropped its database) took 2 s once.
        db_wait_seconds=8.0,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    rt.db.dispose()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def phone(client: TestClient) -> Phone:
    return Phone(client, "+22370000001")


@pytest.fixture
def handset(client: TestClient, runtime: Runtime) -> Handset:
    return Handset(client, runtime, "+22370000001")
