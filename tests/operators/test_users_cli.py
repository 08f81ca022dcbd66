"""`gateway users ...` as an operator types it: transcripts of real processes (the
password piped on stdin), and what each command leaves in the database and the audit log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.cli import main
from gateway.operators import accounts, audit
from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.operators.people import PASSWORD


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


class Cli:
    """`gateway` in a subprocess, on the test's database."""

    def __init__(self, settings: Settings) -> None:
        self.env = {"GATEWAY_DATABASE_URL": settings.database_url,
                    "GATEWAY_CONTENT_DIR": str(REPO), "PATH": "/usr/bin:/bin"}

    def __call__(self, *args: str, stdin: str = "") -> Ran:
        done = subprocess.run([sys.executable, "-m", "gateway", *args], env=self.env,
                              input=stdin, capture_output=True, text=True, check=False,
                              timeout=120)
        return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(settings: Settings, runtime: Runtime) -> Cli:
    del runtime  # the database is migrated by then
    return Cli(settings)


@pytest.fixture
def run(settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """The same commands in this process (quicker, for the long tables)."""
    del runtime
    monkeypatch.setenv("GATEWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEWAY_CONTENT_DIR", str(REPO))

    def command(*args: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return command


def actions(rt: Runtime) -> list[tuple[str, str, str | None, dict[str, object]]]:
    with rt.db.transaction() as conn:
        rows = conn.execute(select(audit.log_table).order_by(audit.log_table.c.id)).all()
    return [(r.actor, r.action, r.object_id, json.loads(r.details)) for r in rows]


def test_create_list_token_revoke_disable_transcript(cli: Cli, runtime: Runtime,
                                                     client: TestClient) -> None:
    made = cli("users", "create", "admin", "--role", "admin", stdin=PASSWORD + "\n")
    assert made == Ran(0, "created admin account admin\n", "")
    made = cli("users", "create", "moussa", "--role", "operator", "--cercle", "mopti",
               "--cercle", "koro", stdin=PASSWORD + "\nignored second line\n")
    assert made == Ran(0, "created operator account moussa for koro, mopti\n", "")

    listed = cli("users", "list")
    assert listed.code == 0
    table = [line.split()[:4] for line in listed.out.splitlines()]
    assert table == [["NAME", "ROLE", "CERCLES", "STATE"],
                     ["admin", "admin", "all", "active"],
                     ["moussa", "operator", "koro,mopti", "active"]]

    token = cli("users", "token", "moussa", "--label", "results script")
    assert token.code == 0 and token.err == ""
    assert token.out.count("\n") == 1 and token.out.startswith("dny_")
    bearer = {"Authorization": f"Bearer {token.out.strip()}"}
    me = client.get("/api/v1/auth/me", headers=bearer)
    assert me.status_code == 200
    assert me.json() == {"name": "moussa", "role": "operator", "cercles": ["koro", "mopti"]}

    assert cli("users", "revoke", "moussa") == Ran(0, "revoked 1 token(s) of moussa\n", "")
    assert client.get("/api/v1/auth/me", headers=bearer).status_code == 401

    assert cli("users", "disable", "moussa").code == 0
    assert cli("users", "list").out.splitlines()[2].split()[3] == "disabled"
    refused = cli("users", "token", "moussa")
    assert refused == Ran(1, "", "gateway users token: account 'moussa' is disabled\n")

    assert actions(runtime) == [
        ("cli", "account.create", "1", {"role": "admin", "cercles": []}),
        ("cli", "account.create", "2", {"role": "operator", "cercles": ["koro", "mopti"]}),
        ("cli", "account.token", "2", {"token_id": 1}),
        ("cli", "account.revoke", "2", {"tokens_revoked": 1}),
        ("cli", "account.disable", "2", {}),
    ]
    assert cli("audit", "verify").code == 0


@pytest.mark.parametrize(("args", "stdin", "code", "err"), [
    (["moussa", "--role", "operator", "--cercle", "mopti"], "court\n", 2,
     "a password has at least 12 characters"),
    (["moussa", "--role", "operator", "--cercle", "mopti"], "", 2,
     "a password has at least 12 characters"),
    (["moussa", "--role", "operator"], PASSWORD, 2,
     "an operator account needs at least one cercle"),
    (["fanta", "--role", "reviewer"], PASSWORD, 2,
     "an reviewer account needs at least one cercle"),
    (["moussa", "--role", "operator", "--cercle", "mopti", "--cercle", "gao"], PASSWORD, 2,
     "unknown cercle id(s): gao (known: bandiagara, bankass, djenne, koro, mopti, youwarou)"),
    (["awa", "--role", "admin", "--cercle", "mopti"], PASSWORD, 2,
     "an admin sees every cercle: give it none"),
    (["Moussa Traoré", "--role", "radio"], PASSWORD, 2,
     f"an account name is {accounts.NAME_RULE}"),
    (["22370000001", "--role", "radio"], PASSWORD, 2,
     f"an account name is {accounts.NAME_RULE}"),
])
def test_create_refuses_with_a_message(run: Callable[..., Ran], runtime: Runtime,
                                       args: list[str], stdin: str, code: int,
                                       err: str) -> None:
    ran = run("users", "create", *args, stdin=stdin)
    assert ran == Ran(code, "", f"gateway users create: {err}\n")
    with runtime.db.transaction() as conn:
        assert accounts.list_accounts(conn) == []
        assert audit.head(conn) == (0, audit.GENESIS)


def test_short_password_refused_as_typed(cli: Cli, runtime: Runtime) -> None:
    ran = cli("users", "create", "moussa", "--role", "operator", "--cercle", "mopti",
              stdin="onze lettre\n")
    assert ran == Ran(2, "", "gateway users create: a password has at least 12 characters\n")
    with runtime.db.transaction() as conn:
        assert accounts.list_accounts(conn) == []


def test_usage_errors_exit_2(run: Callable[..., Ran]) -> None:
    assert run("users", "create", "moussa", "--role", "chief", stdin=PASSWORD).code == 2
    assert run("users", "create", "moussa", stdin=PASSWORD).code == 2
    assert run("users").code == 2


def test_an_existing_name_exits_1(cli: Cli, runtime: Runtime) -> None:
    assert cli("users", "create", "awa", "--role", "admin", stdin=PASSWORD).code == 0
    again = cli("users", "create", "awa", "--role", "radio", stdin="another password 2\n")
    assert again == Ran(1, "", "gateway users create: an account named 'awa' already exists\n")
    with runtime.db.transaction() as conn:
        assert accounts.get(conn, name="awa").role is Role.admin


def test_unknown_names_exit_1(run: Callable[..., Ran]) -> None:
    for command in ("disable", "token", "revoke"):
        assert run("users", command, "nobody") == Ran(
            1, "", f"gateway users {command}: no account named 'nobody'\n")


def test_password_changes_and_ends_sign_in_tokens_but_not_cli_tokens(
        cli: Cli, run: Callable[..., Ran], runtime: Runtime, client: TestClient) -> None:
    assert run("users", "create", "awa", "--role", "admin", stdin=PASSWORD).code == 0
    cli_token = run("users", "token", "awa").out.strip()
    signed = client.post("/api/v1/auth/token", data={"username": "awa", "password": PASSWORD})
    login_token = signed.json()["access_token"]
    with runtime.db.transaction() as conn:
        session = accounts.create_session(conn, account_id=1, hours=8, now=utcnow())

    assert run("users", "password", "awa", stdin="short\n").code == 2
    changed = cli("users", "password", "awa", stdin="un mot de passe tout neuf\n")
    assert changed == Ran(0, "password of awa changed; its dashboard sessions and sign-in "
                             "tokens ended\n", "")
    assert client.post("/api/v1/auth/token", data={
        "username": "awa", "password": PASSWORD}).status_code == 401
    assert client.post("/api/v1/auth/token", data={
        "username": "awa", "password": "un mot de passe tout neuf"}).status_code == 200
    assert client.get("/api/v1/auth/me", headers={
        "Authorization": f"Bearer {login_token}"}).status_code == 401
    assert client.get("/api/v1/auth/me", headers={
        "Authorization": f"Bearer {cli_token}"}).status_code == 200
    with runtime.db.transaction() as conn:
        assert accounts.resolve_session(conn, cookie=session.cookie, now=utcnow()) is None
    assert ("cli", "account.password", "1", {"sessions_ended": 1, "tokens_revoked": 1}) \
        in actions(runtime)
