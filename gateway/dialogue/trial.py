"""Trial sessions: the dashboard's phone in the page, walking the published flows or a
stored version not yet published, through the real USSD webhook.

A trial is a USSD session whose id the gateway signed (:func:`session_id`):
``trial-<flow>-<version>-<nonce>-<mac>``, the mac a keyed digest of the rest, so no
provider's session can pass for one and no database read tells them apart. A trial
begins on the latest published content with ``version`` of ``flow`` in place of the
published one (0: as published), keeps it to the end like any session, and carries out
no effect but the language choice: its answers and reports are never saved, so they never
count in results or reach a reviewer, and no number goes to the vault.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from gateway.privacy.keys import KeyRing

PREFIX = "trial-"
_FORM = re.compile(r"^trial-([a-z][a-z0-9_]*)-(\d{1,6})-([0-9a-f]{12})-([0-9a-f]{20})$")
# The phone a trial dials from: a number no Malian operator assigns (+223 00 ...), never
# shown on a page. Its pseudonym is a contact like any other, whose language is kept.
PHONE = "+22300000000"


@dataclass(frozen=True)
class Trial:
    flow: str
    version: int  # 0: the published version

    @property
    def draft(self) -> str:
        """How a session's state names it (empty for the published content)."""
        return f"{self.flow}:{self.version}" if self.version else ""


def _mac(keys: KeyRing, flow: str, version: int, nonce: str) -> str:
    return keys.mac("ussd-trial", flow, str(version), nonce)[:20]


def session_id(keys: KeyRing, *, flow: str, version: int) -> str:
    """A new trial session's id (a flow id with '-' in it cannot be tried: none has)."""
    nonce = secrets.token_hex(6)
    return f"{PREFIX}{flow}-{version}-{nonce}-{_mac(keys, flow, version, nonce)}"


def parse(keys: KeyRing, session: str) -> Trial | None:
    """The trial a session id names, or None (a provider's session, or a forged id)."""
    if not session.startswith(PREFIX):
        return None
    found = _FORM.match(session)
    if found is None:
        return None
    flow, version, nonce, mac = found.group(1), int(found.group(2)), found.group(3), \
        found.group(4)
    if not secrets.compare_digest(mac, _mac(keys, flow, version, nonce)):
        return None
    return Trial(flow, version)


def draft_of(draft: str) -> tuple[str, int] | None:
    if not draft:
        return None
    flow, _, version = draft.partition(":")
    return flow, int(version)
