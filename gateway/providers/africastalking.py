"""Africa's Talking: form payloads in, ``CON ``/``END `` text out.

Fields and quirks from reference/africastalking.md §1-2: USSD posts ``sessionId``,
``serviceCode``, ``phoneNumber``, ``networkCode`` and the cumulative ``text``; the
end-of-session notification adds ``status``, ``hopsCount``, ``durationInMillis`` (and
``input``/``lastAppResponse``, which are never read here).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.providers.base import UssdEnded, UssdTurn

NAME = "africastalking"
MAX_SESSION_ID = 128
_END_STATUSES = {"success": "success", "incomplete": "incomplete", "failed": "failed"}


def parse_ussd(form: Mapping[str, str]) -> UssdTurn | None:
    """A USSD turn, or None when a required field is missing or absurd."""
    session_id = form.get("sessionId", "").strip()
    phone = form.get("phoneNumber", "")
    if not session_id or len(session_id) > MAX_SESSION_ID or not phone.strip():
        return None
    return UssdTurn(
        provider=NAME,
        session_id=session_id,
        phone=phone,
        service_code=form.get("serviceCode", "")[:64],
        network=form.get("networkCode", "")[:16],
        text=form.get("text", ""),
    )


def parse_ussd_end(form: Mapping[str, str]) -> UssdEnded | None:
    session_id = form.get("sessionId", "").strip()
    if not session_id or len(session_id) > MAX_SESSION_ID:
        return None
    status = _END_STATUSES.get(form.get("status", "").strip().lower(), "unknown")
    return UssdEnded(
        provider=NAME,
        session_id=session_id,
        status=status,
        hops=_int(form.get("hopsCount")),
        duration_ms=_int(form.get("durationInMillis")),
    )


def render_ussd(text: str, *, end: bool) -> str:
    return ("END " if end else "CON ") + text


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 12:
        return None
    return int(value)
