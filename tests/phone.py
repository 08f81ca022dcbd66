"""A phone that dials the gateway exactly as Africa's Talking does: a fresh ``sessionId``
per dial, the whole input history in ``text`` joined with ``*``, form-encoded POSTs.

    phone.dial()      -> Screen("CON", "Langue / Kan:\\n1. Francais\\n2. Bamanankan")
    phone.press("1")  -> the next screen
"""

from __future__ import annotations

import textwrap
import uuid
from dataclasses import dataclass, field
from typing import Any

USSD_PATH = "/webhooks/africastalking/ussd"


@dataclass(frozen=True)
class Screen:
    kind: str  # "CON" or "END"
    text: str

    @classmethod
    def parse(cls, body: str) -> Screen:
        kind, _, text = body.partition(" ")
        assert kind in ("CON", "END"), f"malformed USSD reply: {body!r}"
        return cls(kind, text)


def CON(text: str) -> Screen:  # noqa: N802 - reads like the wire format
    return Screen("CON", textwrap.dedent(text).strip("\n"))


def END(text: str) -> Screen:  # noqa: N802
    return Screen("END", textwrap.dedent(text).strip("\n"))


@dataclass
class Phone:
    client: Any  # a TestClient or an httpx.Client
    number: str
    token: str | None = None
    service_code: str = "*123#"
    session_id: str = ""
    inputs: list[str] = field(default_factory=list)
    last_status: int = 0

    def post(self, text: str, session_id: str | None = None) -> str:
        params = {"token": self.token} if self.token else None
        response = self.client.post(
            USSD_PATH, params=params,
            data={"sessionId": session_id or self.session_id, "serviceCode": self.service_code,
                  "phoneNumber": self.number, "networkCode": "99999", "text": text},
        )
        self.last_status = response.status_code
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return str(response.text)

    @property
    def text(self) -> str:
        return "*".join(self.inputs)

    def dial(self, session_id: str | None = None) -> Screen:
        self.session_id = session_id or f"ATUid_{uuid.uuid4().hex}"
        self.inputs = []
        return Screen.parse(self.post(""))

    def press(self, *keys: str) -> Screen:
        """Answer the current screen; several keys answer several screens in a row."""
        screen = None
        for key in keys:
            self.inputs.append(key)
            screen = Screen.parse(self.post(self.text))
        assert screen is not None
        return screen

    def repeat(self) -> Screen:
        """The last request again, as a provider retry would send it."""
        return Screen.parse(self.post(self.text))
