"""The ``gateway`` command (also ``python -m gateway``). Usage errors exit 2."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import getpass
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from gateway.content import catalogs as content_mod
from gateway.operators.access import Role
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.operators import accounts as accounts_mod
    from gateway.store.db import Database

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Dannaya SMS and USSD community-feedback gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP service (and the outbox worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true",
                       help="do not run the outbox worker in this process")

    sub.add_parser("worker", help="run the outbox worker alone")

    flows = sub.add_parser("flows", help="work with flows and catalogs")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True, metavar="COMMAND")
    check = flows_sub.add_parser("check", help="validate DIR/flows and DIR/messages")
    check.add_argument("dir", nargs="?", type=Path, default=None, metavar="DIR")

    simulate = sub.add_parser("simulate", help="a terminal phone for a running gateway")
    simulate.add_argument("--url", default="http://127.0.0.1:8000", metavar="BASE")
    simulate.add_argument("--phone", default="+22370000000", metavar="+223…")
    simulate.add_argument("--service-code", default="*123#", help=argparse.SUPPRESS)
    simulate.add_argument("--kannel", action="store_true",
                          help="be the operator's USSD gateway (SMPP) for your own Kannel")
    simulate.add_argument("--smpp-port", type=int, default=2775, metavar="PORT",
                          help="with --kannel: the SMPP port Kannel binds to (127.0.0.1)")
    simulate.add_argument("--op-tag", type=lambda v: int(v, 0), default=0x0501,
                          metavar="TAG", help="with --kannel: ussd_service_op's TLV tag")
    simulate.add_argument("--session-tag", type=lambda v: int(v, 0), default=0x1383,
                          metavar="TAG", help="with --kannel: its_session_info's TLV tag")

    sub.add_parser("migrate", help="bring the database to the latest schema")

    keys = sub.add_parser("keys", help="manage the key file")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    keys_sub.add_parser("init", help="create the key file (refuses to overwrite one)")
    keys_sub.add_parser("rotate", help="add a master-key version and re-wrap data keys")
    keys_sub.add_parser("shred", help="destroy old data-wrapping keys now (after erasures)")

    sub.add_parser("purge", help="apply the retention rules once")

    users = sub.add_parser("users", help="operator accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    create = users_sub.add_parser(
        "create", help="make an account (password from stdin's first line, or prompted)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--cercle", action="append", default=[], dest="cercles", metavar="ID",
                        help="a cercle id the account works in (operator, reviewer: one at "
                        "least); repeat for more")
    users_sub.add_parser("list", help="every account, its role, cercles and state")
    disable = users_sub.add_parser("disable", help="refuse the account's sign-ins, tokens "
                                   "and sessions from now on")
    disable.add_argument("name", metavar="NAME")
    password = users_sub.add_parser("password", help="set a new password (ends the "
                                    "account's dashboard sessions and sign-in tokens)")
    password.add_argument("name", metavar="NAME")
    token = users_sub.add_parser("token", help="print a new API token (only its hash is kept)")
    token.add_argument("name", metavar="NAME")
    token.add_argument("--label", default="", metavar="TEXT", help="what the token is for")
    revoke = users_sub.add_parser("revoke", help="revoke every API token of the account")
    revoke.add_argument("name", metavar="NAME")

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    audit_sub.add_parser("verify", help="check the audit chain: exit 0 intact, 1 otherwise")
    return parser


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "GATEWAY_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"gateway: setting {name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def cmd_flows_check(directory: Path | None) -> int:
    from gateway.dialogue.services import engine_rules
    from gateway.dialogue.validate import check, errors

    settings = _settings()
    root = directory if directory is not None else content_mod.locate(settings.content_dir)
    if not (root / "flows").is_dir():
        print(f"gateway flows check: {root} has no flows/ folder", file=sys.stderr)
        return EXIT_USAGE
    problems = check(root, engine_rules(settings))
    for problem in problems:
        print(problem)
    bad = errors(problems)
    if not bad:
        flows = len(list((root / "flows").glob("*.yml")))
        print(f"ok: {flows} flows in {root}" + (f", {len(problems)} warning(s)"
                                                  if problems else ""))
    return EXIT_PROBLEMS if bad else EXIT_OK


def _refuse_without_keys(settings: Settings) -> bool:
    """In production, a command that needs the key file refuses before it touches the
    database, with the message ``serve`` gives (True when it refused). In development the
    file is created if missing, as ``serve`` does."""
    from gateway.privacy import keys as keys_mod

    try:
        keys_mod.load(settings.key_file, create=not settings.is_production)
    except keys_mod.KeyFileError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return True
    return False


def cmd_serve(host: str, port: int, worker: bool) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.errors import StartupError
    from gateway.logs import configure_logging
    from gateway.outbox.worker_process import WorkerProcess, run_worker_process
    from gateway.runtime import build_runtime

    class Server(uvicorn.Server):
        """uvicorn's server, except that a graceful shutdown on SIGTERM or SIGINT exits 0:
        uvicorn raises the signal again once it is done, so the process would end with 143
        (which systemd counts as a failure) or a KeyboardInterrupt traceback."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    configure_logging()
    settings = _settings()
    try:
        runtime = build_runtime(settings)
    except StartupError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    child = None if runtime.db.sqlite or not worker else WorkerProcess(settings)
    background = functools.partial(run_worker_process, child=child) if worker else None
    app = create_app(settings, runtime=runtime, background=background, db_process=True)
    server = Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                   access_log=False, server_header=False,
                                   timeout_graceful_shutdown=20))
    _freeze_start_up_objects()
    if child is not None:
        child.start(forked_from=runtime)  # before the loop, its threads and connections
    try:
        server.run()
    finally:
        if child is not None:  # (the app's shutdown stopped it, unless it never started)
            child.stop()
    return EXIT_OK


def _freeze_start_up_objects() -> None:
    """Take what start-up made (modules, the content, the app and its runtime, SQLAlchemy's
    metadata and caches) out of the garbage collector's sight: it lives as long as the
    process, and each full collection walked all of it, pausing the event loop, and every
    USSD hop waiting on it, for about 100 ms (twice a minute while a broadcast was being
    sent; with this, about 6 ms)."""
    gc.collect()
    gc.freeze()


def cmd_worker() -> int:
    from gateway.errors import StartupError
    from gateway.logs import configure_logging
    from gateway.runtime import build_runtime, run_worker_until_signal

    configure_logging()
    try:
        runtime = build_runtime(_settings())
    except StartupError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    _freeze_start_up_objects()
    asyncio.run(run_worker_until_signal(runtime))
    return EXIT_OK


def cmd_migrate() -> int:
    from sqlalchemy.exc import OperationalError

    from gateway.store import migrate
    from gateway.store.db import make_engine

    settings = _settings()
    if settings.is_production and _refuse_without_keys(settings):
        return EXIT_PROBLEMS  # a deployment without its keys stops here, not at serve
    engine = make_engine(settings.database_url)
    try:
        before = migrate.current(engine)
        migrate.upgrade(engine)
        after = migrate.current(engine)
    except OperationalError as exc:
        print(f"gateway migrate: cannot reach the database ({exc.__class__.__name__})",
              file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        engine.dispose()
    if before == after:
        print(f"database already at the latest migration ({after})")
    else:
        print(f"database migrated from {before or 'empty'} to {after}")
    return EXIT_OK


def cmd_keys_init() -> int:
    from gateway.privacy import keys as keys_mod

    settings = _settings()
    if settings.key_file.exists():
        print(f"gateway keys init: {settings.key_file} already exists; not touched",
              file=sys.stderr)
        return EXIT_PROBLEMS
    keys_mod.write_new(settings.key_file)
    print(f"created {settings.key_file} (mode 0600). Back it up now, apart from the database: "
          "without it, nothing encrypted can be read.")
    return EXIT_OK


def cmd_keys_rotate() -> int:
    from gateway import retention
    from gateway.privacy import keys as keys_mod
    from gateway.store.models import utcnow

    settings = _settings()
    if not settings.key_file.exists():
        print(f"gateway keys rotate: no key file at {settings.key_file}", file=sys.stderr)
        return EXIT_PROBLEMS
    try:
        keys_mod.load(settings.key_file, create=False)
    except keys_mod.KeyFileError as exc:
        print(f"gateway keys rotate: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    with _database(settings) as db:
        done = retention.rotate(db, key_file=settings.key_file, now=utcnow())
    print(f"master key version {done.master_version} is now current; re-wrapped "
          f"{done.data_keys} data key(s); moved {done.numbers} vault number(s) under data "
          f"keys. Copy {settings.key_file} to every replica and to your key backup now.")
    return EXIT_OK


def cmd_keys_shred() -> int:
    from gateway import retention
    from gateway.privacy import keys as keys_mod
    from gateway.store.models import utcnow

    settings = _settings()
    try:
        keys_mod.load(settings.key_file, create=False)
    except keys_mod.KeyFileError as exc:
        print(f"gateway keys shred: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    with _database(settings) as db:
        version = retention.shred(db, key_file=settings.key_file, now=utcnow(), force=True)
    print(f"master key version {version} and new data-wrapping keys are now the only ones: "
          "numbers, typed text and state in dumps taken before now can no longer be read. "
          f"Copy {settings.key_file} to every replica and replace your key backup now.")
    return EXIT_OK


def cmd_purge() -> int:
    from gateway import retention
    from gateway.logs import configure_logging
    from gateway.store.models import utcnow

    configure_logging()
    settings = _settings()
    if _refuse_without_keys(settings):
        return EXIT_PROBLEMS
    with _database(settings) as db:
        done = retention.purge(db, retention=retention.Retention.of(settings), now=utcnow(),
                               key_file=settings.key_file)
    print(f"purged: {done}")
    return EXIT_OK


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    """The database, at the latest schema (SQLite migrates itself; PostgreSQL must have
    been migrated with `gateway migrate`)."""
    from gateway.errors import StartupError
    from gateway.store.db import Database
    from gateway.store.migrate import SchemaBehind, prepare_database

    db = Database(settings.database_url)
    try:
        try:
            prepare_database(db)
        except SchemaBehind as exc:
            raise StartupError(str(exc)) from None
        yield db
    finally:
        db.dispose()


def _read_password() -> str | None:
    """stdin's first line when it is not a terminal; else prompted twice (None: the two
    differ)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass("Password (12 characters or more): ")
    if getpass.getpass("Password again: ") != first:
        return None
    return first


def cmd_users(args: argparse.Namespace) -> int:
    from gateway.errors import StartupError
    from gateway.operators import accounts
    from gateway.operators.access import Areas
    from gateway.store.models import utcnow

    settings = _settings()
    command, name = args.users_command, str(getattr(args, "name", ""))
    where = f"gateway users {command}"
    known: frozenset[str] = frozenset()
    if command == "create":
        content, _ = content_mod.load(content_mod.locate(settings.content_dir))
        known = frozenset(Areas.of(content.communes).communes_of)
    password: str | None = None
    if command in ("create", "password"):
        password = _read_password()
        if password is None:
            print(f"{where}: the two passwords differ", file=sys.stderr)
            return EXIT_USAGE
    try:
        with _database(settings) as db, db.transaction() as conn:
            now = utcnow()
            if command == "create":
                assert password is not None
                made = accounts.create(conn, name=name, role=Role(args.role),
                                       cercles=args.cercles, password=password,
                                       known_cercles=known, actor="cli", now=now)
                print(f"created {made.role} account {made.name}"
                      + (f" for {', '.join(sorted(made.cercles))}" if made.cercles else ""))
            elif command == "list":
                _print_accounts(accounts.list_accounts(conn))
            elif command == "disable":
                accounts.disable(conn, name=name, actor="cli", now=now)
                print(f"account {name} is disabled: its tokens and sessions are refused")
            elif command == "password":
                assert password is not None
                accounts.set_password(conn, name=name, password=password, actor="cli",
                                      now=now)
                print(f"password of {name} changed; its dashboard sessions and sign-in "
                      "tokens ended")
            elif command == "token":
                print(accounts.new_cli_token(conn, name=name, label=args.label, actor="cli",
                                             now=now))
            else:
                revoked = accounts.revoke_tokens(conn, name=name, actor="cli", now=now)
                print(f"revoked {revoked} token(s) of {name}")
    except accounts.InvalidAccount as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE if command in ("create", "password") else EXIT_PROBLEMS
    except (accounts.AccountExists, accounts.UnknownAccount, StartupError) as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _print_accounts(found: Sequence[accounts_mod.AccountInfo]) -> None:
    rows = [("NAME", "ROLE", "CERCLES", "STATE", "CREATED")] + [
        (a.name, a.role.value, ",".join(sorted(a.cercles)) or ("all" if a.role is Role.admin
                                                                else "-"),
         "disabled" if a.disabled else "active", a.created_at.strftime("%Y-%m-%d %H:%M"))
        for a in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + row[4])


def cmd_audit_verify() -> int:
    from gateway.errors import StartupError
    from gateway.operators import audit

    try:
        with _database(_settings()) as db, db.transaction() as conn:
            broken = audit.verify(conn)
            at_head = audit.head(conn)
    except StartupError as exc:
        print(f"gateway audit verify: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    if broken is not None:
        print(broken)
        if broken.entry is not None:
            print(broken.entry)
        return EXIT_PROBLEMS
    assert at_head is not None
    entries, head = at_head
    print(f"ok: the audit chain is intact ({entries} entries; head {head})")
    return EXIT_OK


def _describe(exc: BaseException) -> str:
    """One line about a failure, safe to print: our own errors say what to do; anything
    else is named by its class only (a driver's message may quote the data it held)."""
    from sqlalchemy.exc import OperationalError

    from gateway.errors import StartupError
    from gateway.privacy.keys import KeyFileError

    if isinstance(exc, (StartupError, KeyFileError)):
        return str(exc)
    if isinstance(exc, OperationalError) or exc.__class__.__name__ == "OperationalError":
        return f"the database cannot be reached or refused the work ({exc.__class__.__name__})"
    if isinstance(exc, OSError):
        return f"{exc.__class__.__name__}: {exc.strerror or 'system error'}"
    return f"unexpected {exc.__class__.__name__}; nothing else was printed, as it may quote data"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"gateway {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no command ends in a raw traceback
        print(f"gateway {args.command}: failed: {_describe(exc)}", file=sys.stderr)
        return EXIT_PROBLEMS


def _run(args: argparse.Namespace) -> int:
    if args.command == "flows":
        return cmd_flows_check(args.dir)
    if args.command == "serve":
        return cmd_serve(args.host, args.port, not args.no_worker)
    if args.command == "worker":
        return cmd_worker()
    if args.command == "simulate":
        from gateway.simulate import run as simulate
        from gateway.simulate import run_kannel

        if args.kannel:
            return run_kannel(port=args.smpp_port, phone=args.phone,
                              service_code=args.service_code, settings=_settings(),
                              op_tag=args.op_tag, session_tag=args.session_tag)
        return simulate(base=args.url, phone=args.phone, service_code=args.service_code,
                        token=_settings().token)
    if args.command == "migrate":
        return cmd_migrate()
    if args.command == "keys":
        commands = {"init": cmd_keys_init, "rotate": cmd_keys_rotate, "shred": cmd_keys_shred}
        return commands[args.keys_command]()
    if args.command == "users":
        return cmd_users(args)
    if args.command == "audit":
        return cmd_audit_verify()
    return cmd_purge()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
