"""A phone that dials the gateway exactly as Africa's Talking does: a fresh ``sessionId``
per dial, the whole input history in ``text`` joined with ``*``, form-encoded POSTs; and
one whose operator reaches it through Kannel's USSD get-url (``KannelPhone``).

    phone.dial()      -> Screen("CON", "Langue / Kan / Demngal:\\n1. Francais\\n...")
    phone.press("1")  -> the next screen
"""

from __future__ import annotations

import textwrap
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

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


KANNEL_USSD_PATH = "/webhooks/kannel/ussd"
BEGIN, ANSWER, ABORT = 1, 18, 0x20  # ussd_service_op as the operator sends it
WAIT, LAST = 2, 17  # ... and as the gateway answers


@dataclass(frozen=True)
class KannelAnswer:
    """A get-url answer: the screen, and what X-Kannel-Meta-Data and X-Kannel-Coding say."""

    screen: Screen | None  # None: an empty answer (nothing goes back to the phone)
    op: int | None
    session_info: bytes | None
    coding: str | None


def meta_of(header: str) -> dict[str, bytes]:
    """``?smpp?ussd_service_op=2&its_session_info=%0A%01`` as name -> bytes."""
    assert header.startswith("?smpp?"), header
    header = header.rstrip("&")
    pairs = [part.partition("=") for part in header[len("?smpp?"):].split("&") if part]
    return {name: unquote_to_bytes(value.replace("+", "%20")) for name, _, value in pairs}


@dataclass
class KannelPhone:
    """A phone whose operator's USSD gateway reaches the gateway through Kannel: each
    operation is one get-url call as smsbox makes it (text ``%a``, meta-data ``%D`` with
    ``ussd_service_op`` as its raw octet and ``its_session_info`` as two raw bytes), one
    input per call, and a fresh Kannel id per call. The screen comes back in the answer.

        phone.dial()      -> Screen("CON", "Langue / Kan / ...")
        phone.press("1")  -> the next screen
    """

    client: Any
    number: str
    token: str | None = None
    session: int | None = 0x0A  # its_session_info's first octet; None: none sent
    seq: int = 0
    last_id: str = ""
    last_params: dict[str, str] = field(default_factory=dict)
    answers: list[KannelAnswer] = field(default_factory=list)

    def info(self) -> bytes | None:
        if self.session is None:
            return None
        return bytes([self.session, (self.seq << 1) & 0xFE])

    def call(self, op: int, text: str, *, ucs2: bool = False) -> KannelAnswer:
        self.seq = (self.seq + 1) % 128
        meta = "?smpp?ussd_service_op=" + quote_from_bytes(bytes([op]), safe="")
        info = self.info()
        if info is not None:
            meta += "&its_session_info=" + quote_from_bytes(info, safe="")
        meta += "&"
        data = text.encode("utf-16-be" if ucs2 else "utf-8")
        self.last_id = str(uuid.uuid4())
        self.last_params = {
            "from": self.number, "to": "36123",
            "text": "+".join(quote_from_bytes(w, safe="") for w in data.split()),
            "id": self.last_id, "meta": quote(meta, safe=""), "smsc": "ussd",
            "coding": "2" if ucs2 else "0", "charset": "UTF-16BE" if ucs2 else "UTF-8"}
        return self.send(self.last_params)

    def send(self, params: dict[str, str]) -> KannelAnswer:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        if self.token:
            query += f"&token={quote(self.token, safe='')}"
        response = self.client.get(f"{KANNEL_USSD_PATH}?{query}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        header = response.headers.get("x-kannel-meta-data")
        if not response.text:
            assert header is None
            answer = KannelAnswer(None, None, None, None)
        else:
            assert header is not None, "a screen without its meta-data"
            meta = meta_of(header)
            op = int(meta["ussd_service_op"])
            assert op in (WAIT, LAST)
            sent = meta_of(unquote(params["meta"])) if params.get("meta") else {}
            # echoed byte for byte
            assert meta.get("its_session_info") == sent.get("its_session_info")
            screen = Screen("END" if op == LAST else "CON", response.text)
            answer = KannelAnswer(screen, op, meta.get("its_session_info"),
                                  response.headers.get("x-kannel-coding"))
        self.answers.append(answer)
        return answer

    def dial(self, code: str = "*123#", session: int | None = None) -> Screen:
        if session is not None:
            self.session = session
        screen = self.call(BEGIN, code).screen
        assert screen is not None
        return screen

    def press(self, *keys: str, ucs2: bool = False) -> Screen:
        screen = None
        for key in keys:
            screen = self.call(ANSWER, key, ucs2=ucs2).screen
        assert screen is not None
        return screen

    def abort(self, op: int = ABORT) -> KannelAnswer:
        """The network ends the session (the resident hung up, or the operator timed out)."""
        return self.call(op, "")

    def repeat(self) -> Screen | None:
        """The last call again, the same Kannel id (smsbox retrying its get-url)."""
        return self.send(self.last_params).screen
