"""The operators the operator tests sign in as, made the way the CLI makes them
(``accounts.create``), and their API tokens. Other operator tests import these."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.operators import accounts
from gateway.operators.access import Principal, Role
from gateway.runtime import Runtime
from gateway.store.models import utcnow

PASSWORD = "sept pintades au marché"  # 23 characters
CERCLES = frozenset({"bandiagara", "bankass", "djenne", "koro", "mopti", "youwarou"})


@dataclass(frozen=True)
class Person:
    name: str
    role: Role
    cercles: frozenset[str]
    token: str  # a command-line token (no expiry)
    principal: Principal

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make(rt: Runtime, name: str, role: Role, *cercles: str,
         password: str = PASSWORD) -> Person:
    """An account (audited as made by "cli") and a token for it."""
    now = utcnow()
    with rt.db.transaction() as conn:
        made = accounts.create(conn, name=name, role=role, cercles=cercles, password=password,
                               known_cercles=CERCLES, actor="cli", now=now)
        token = accounts.new_cli_token(conn, name=name, label="tests", actor="cli", now=now)
    return Person(name, role, made.cercles, token, made.principal)


def cast(rt: Runtime) -> dict[Role, Person]:
    """One account per role: an admin, an operator for Mopti and Koro, a reviewer for
    Djenné, a radio host."""
    return {
        Role.admin: make(rt, "awa", Role.admin),
        Role.operator: make(rt, "moussa", Role.operator, "mopti", "koro"),
        Role.reviewer: make(rt, "fanta", Role.reviewer, "djenne"),
        Role.radio: make(rt, "kaoural", Role.radio),
    }
