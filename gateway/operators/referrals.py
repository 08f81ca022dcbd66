"""Referral: a reviewed report passed to a partner who can act on it, by e-mail or by a
signed webhook. Logic and queries only; the HTTP is in ``api/reports.py`` and
``api/partners.py``.

What leaves: the report's id, date, channel, place, coded answers (with their French
labels) and the redacted text a reviewer wrote, nothing else: never the original text,
never the reporter's pseudonym, never notes (:func:`payload`).

How: :func:`refer` queues a ``referral`` row in the request's transaction (the report
becomes ``referred``; audited). The outbox worker calls :func:`deliver_due` through the
jobs hook the composition gives it (``runtime.make_worker``): it claims due rows under a
lease (``attempts`` + 1), sends, and records the outcome, each in its own transaction.
A partner that accepted (SMTP server took the message; webhook answered 2xx) is never
sent the referral again. A failure is retried with backoff (:data:`BACKOFF`) until
:data:`MAX_ATTEMPTS`, then the referral is ``failed`` (referring again re-queues it). A
worker that died mid-send leaves a lease that runs out: the referral is sent again with the
same delivery id (``X-Dannaya-Delivery``, the e-mail's Message-ID), so a partner can tell
a repeat of a send whose answer was lost.

A webhook gets ``POST`` with the JSON body and ``X-Dannaya-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw body with the partner's secret. Secrets are stored sealed under a
key derived from the key file's pseudonym key (never rotated or shredded, unlike the
master keys), and are never shown again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Row, Table, insert, select, update

from gateway.operators import audit
from gateway.operators import reports as reports_mod
from gateway.operators.access import Areas, Principal
from gateway.operators.reports import BadMove, Conflict, Invalid, Vocabulary
from gateway.privacy.keys import KeyRing
from gateway.settings import Settings
from gateway.store.db import Database
from gateway.store.models import Partner, Referral

log = logging.getLogger("gateway.operators.referrals")

partners: Table = Partner.__table__  # type: ignore[attr-defined]
referrals: Table = Referral.__table__  # type: ignore[attr-defined]
reports: Table = reports_mod.reports

BATCH = 5  # referrals claimed per step of the worker's jobs
LEASE = timedelta(minutes=5)  # longer than any send: the timeouts below are far shorter
SEND_TIMEOUT = 20.0  # seconds, per SMTP or HTTP operation
BACKOFF = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600)  # seconds, by attempt
MAX_ATTEMPTS = len(BACKOFF) + 1  # about a day of trying
WORKER = "worker"  # the audit actor of deliveries
SIGNATURE_HEADER = "X-Dannaya-Signature"
DELIVERY_HEADER = "X-Dannaya-Delivery"
MIN_SECRET = 16
MAX_SECRET = 256
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 ._'()-]{0,63}$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_SECRET_LABEL = "dannaya/partner-secrets/v1"  # noqa: S105 (a label, not a secret)


# -- partners ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """The SMTP server referral e-mails leave through (``GATEWAY_SMTP_*``)."""

    host: str | None
    port: int
    user: str | None
    password: str | None
    sender: str | None
    starttls: bool
    timeout: float = SEND_TIMEOUT

    @classmethod
    def of(cls, settings: Settings) -> Mail:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password \
            else None
        return cls(settings.smtp_host, settings.smtp_port, settings.smtp_user, password,
                   settings.smtp_from, settings.smtp_starttls)

    @property
    def configured(self) -> bool:
        return bool(self.host and self.sender)


@dataclass(frozen=True)
class PartnerInfo:
    id: int
    name: str
    kind: str  # email | webhook
    email: str | None
    webhook_url: str | None
    disabled: bool
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """As the API shows it: never the secret."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "email": self.email,
                "webhook_url": self.webhook_url, "disabled": self.disabled,
                "created_at": reports_mod.iso_time(self.created_at)}


def _info(row: Row[Any]) -> PartnerInfo:
    return PartnerInfo(row.id, row.name, row.kind, row.email, row.webhook_url,
                       bool(row.disabled), row.created_at)


def _box(keys: KeyRing) -> AESGCM:
    # A key of its own, derived from the pseudonym key (keyed BLAKE2b, KeyRing.mac).
    return AESGCM(bytes.fromhex(keys.mac(_SECRET_LABEL)))


def seal_secret(keys: KeyRing, secret: str, *, name: str) -> str:
    nonce = os.urandom(12)
    sealed = _box(keys).encrypt(nonce, secret.encode("utf-8"), f"partner:{name}".encode())
    return "p1." + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_secret(keys: KeyRing, token: str, *, name: str) -> str:
    raw = base64.urlsafe_b64decode(token.partition(".")[2].encode("ascii"))
    return _box(keys).decrypt(raw[:12], raw[12:], f"partner:{name}".encode()).decode("utf-8")


def _check_url(url: str, *, production: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2000:
        raise Invalid("webhook_url: an http(s) URL with a host")
    if production and parts.scheme != "https":
        raise Invalid("webhook_url: must be https in production")
    if parts.username or parts.password:
        raise Invalid("webhook_url: no credentials in the URL; the secret signs the body")
    return url


def create_partner(conn: Connection, *, who: Principal, keys: KeyRing, mail: Mail,
                   production: bool, name: str, email: str | None, webhook_url: str | None,
                   secret: str | None, now: datetime) -> PartnerInfo:
    """A partner reached by e-mail (``email``) or by webhook (``webhook_url`` and
    ``secret``). Raises :class:`Invalid` (422) or :class:`Conflict` (the name exists)."""
    name = name.strip()
    if not _NAME.match(name) or audit.text_problem(name):
        raise Invalid("name: up to 64 letters, digits, spaces and . _ ' ( ) -, "
                      "starting with a letter")
    if (email is None) == (webhook_url is None):
        raise Invalid("give either email, or webhook_url and secret")
    values: dict[str, Any] = {"name": name, "disabled": False, "created_at": now}
    if email is not None:
        email = email.strip()
        if len(email) > 254 or not _EMAIL.match(email):
            raise Invalid("email: not an e-mail address")
        if secret is not None:
            raise Invalid("secret: only a webhook partner has a secret")
        if not mail.configured:
            raise Invalid("email: no SMTP server is configured (GATEWAY_SMTP_HOST and "
                          "GATEWAY_SMTP_FROM)")
        values.update(kind="email", email=email)
    else:
        assert webhook_url is not None
        url = _check_url(webhook_url.strip(), production=production)
        if secret is None or not MIN_SECRET <= len(secret) <= MAX_SECRET:
            raise Invalid(f"secret: a webhook needs a secret of {MIN_SECRET} to {MAX_SECRET} "
                          "characters")
        values.update(kind="webhook", webhook_url=url,
                      secret=seal_secret(keys, secret, name=name))
    if conn.execute(select(partners.c.id).where(partners.c.name == name)).first():
        raise Conflict(f"a partner named {name!r} already exists")
    partner_id = conn.execute(insert(partners).values(**values)
                              .returning(partners.c.id)).scalar_one()
    audit.record(conn, actor=who.name, action="partner.create", object_type="partner",
                 object_id=partner_id, details={"kind": values["kind"]}, now=now)
    return _info(conn.execute(select(partners).where(partners.c.id == partner_id)).one())


def list_partners(conn: Connection) -> list[PartnerInfo]:
    return [_info(r) for r in conn.execute(select(partners).order_by(partners.c.name)).all()]


# -- referring ---------------------------------------------------------------------------


def _referral_dict(row: Row[Any], partner: str) -> dict[str, Any]:
    return {"id": row.id, "report": row.report_id, "partner": partner, "status": row.status,
            "attempts": row.attempts, "created_at": reports_mod.iso_time(row.created_at),
            "created_by": row.created_by, "delivered_at": reports_mod.iso_time(row.delivered_at),
            "last_error": row.last_error}


def refer(conn: Connection, *, who: Principal, areas: Areas, report_id: int, partner: str,
          now: datetime) -> dict[str, Any]:
    """Queue the report for ``partner``; a reviewed report becomes ``referred`` (a
    referred one may go to another partner too). Raises NotFound/OutOfScope (404),
    :class:`Invalid` (no such partner), :class:`BadMove` (a new or closed report) or
    :class:`Conflict` (already referred to that partner)."""
    row = reports_mod.get_for_update(conn, who=who, areas=areas, report_id=report_id)
    found = conn.execute(select(partners).where(partners.c.name == partner)).one_or_none()
    if found is None or found.disabled:
        raise Invalid(f"partner: no partner named {partner!r}")
    if row.status not in ("reviewed", "referred"):
        raise BadMove(row.status, "referred")
    existing = conn.execute(select(referrals).where(
        referrals.c.report_id == report_id, referrals.c.partner_id == found.id)).one_or_none()
    fresh = {"status": "queued", "attempts": 0, "next_attempt_at": now, "lease_owner": None,
             "lease_until": None, "last_error": None, "created_by": who.name,
             "created_at": now, "delivered_at": None, "updated_at": now}
    if existing is None:
        referral_id = int(conn.execute(insert(referrals).values(
            report_id=report_id, partner_id=found.id, **fresh).returning(referrals.c.id)
        ).scalar_one())
    elif existing.status == "failed":  # it never reached them: try again from the start
        referral_id = int(existing.id)
        conn.execute(update(referrals).where(referrals.c.id == referral_id).values(**fresh))
    else:
        raise Conflict(f"this report is already referred to {found.name} "
                       f"({existing.status})")
    if row.status == "reviewed":
        reports_mod.set_status(conn, who=who, row=row, to="referred", now=now)
    reports_mod.event(conn, report_id=report_id, actor=who.name, action="refer",
                      ref=found.name, now=now)
    audit.record(conn, actor=who.name, action="report.refer", object_type="report",
                 object_id=report_id, details={"partner": found.name, "referral": referral_id},
                 now=now)
    made = conn.execute(select(referrals).where(referrals.c.id == referral_id)).one()
    return _referral_dict(made, found.name)


# -- what a partner receives -------------------------------------------------------------


def payload(report: Row[Any], *, vocab: Vocabulary, referral_id: int,
            now: datetime) -> dict[str, Any]:
    """The referral as the partner receives it: coded answers and the redacted text,
    nothing else of the report (no original text, no pseudonym, no notes; its day, not its
    time)."""
    cercle, commune = vocab.place(report.area)
    return {
        "referral": referral_id, "report": report.id,
        "date": reports_mod.day_of(report.created_at), "channel": report.channel,
        "flow": report.flow, "cercle": cercle, "commune": commune,
        "answers": vocab.answers(report.flow, json.loads(report.answers)),
        "redacted_text": report.redacted_text, "sent_at": reports_mod.iso_time(now),
    }


def body_of(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of the raw body with the partner's secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _mail_text(data: dict[str, Any], vocab: Vocabulary) -> str:
    place = ", ".join(vocab.place_names.get(p, p) for p in (data["cercle"], data["commune"])
                      if p) or "non précisé"
    lines = [
        f"Signalement n° {data['report']}, reçu le {data['date']} "
        f"(canal {data['channel']}).",
        f"Lieu : {place}.", "", "Réponses :",
    ]
    for question, answer in data["answers"].items():
        label = answer["label"]
        shown = f"{label} ({answer['value']})" if label else answer["value"]
        lines.append(f"- {question} : {shown}")
    lines.append("")
    if data["redacted_text"]:
        lines += ["Texte (expurgé) :", data["redacted_text"]]
    else:
        lines.append("Aucun texte transmis.")
    lines += ["", f"Les mêmes données en JSON sont jointes (referral-{data['referral']}.json).",
              f"Référence de l'envoi : {data['referral']}."]
    return "\n".join(lines) + "\n"


def email_message(data: dict[str, Any], body: bytes, *, vocab: Vocabulary, sender: str,
                  to: str, now: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Dannaya : dossier {data['report']}"
    message["Date"] = format_datetime(now)
    domain = sender.rpartition("@")[2] or "dannaya.invalid"
    message["Message-ID"] = f"<referral.{data['referral']}@{domain}>"  # the same on a retry
    message[DELIVERY_HEADER] = str(data["referral"])
    message.set_content(_mail_text(data, vocab))
    message.add_attachment(body, maintype="application", subtype="json",
                           filename=f"referral-{data['referral']}.json")
    return message


# -- delivery (the outbox worker's jobs hook) ---------------------------------------------


@dataclass(frozen=True)
class Job:
    referral_id: int
    report_id: int
    partner: str
    kind: str
    email: str | None
    url: str | None
    secret: str | None  # opened; None for e-mail (or a webhook whose secret is unreadable)
    attempts: int
    data: dict[str, Any]


def claim(conn: Connection, *, keys: KeyRing, vocab: Vocabulary, owner: str, now: datetime,
          limit: int = BATCH) -> list[Job]:
    """Take due referrals (queued and due, or a dead worker's whose lease ran out) under a
    lease; each attempt is counted as it is taken."""
    due = select(referrals.c.id).where(
        ((referrals.c.status == "queued") & (referrals.c.next_attempt_at <= now))
        | ((referrals.c.status == "sending") & (referrals.c.lease_until < now))
    ).order_by(referrals.c.next_attempt_at, referrals.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = [int(i) for i in conn.execute(due).scalars()]
    if not ids:
        return []
    conn.execute(update(referrals).where(referrals.c.id.in_(ids)).values(
        status="sending", lease_owner=owner, lease_until=now + LEASE,
        attempts=referrals.c.attempts + 1, updated_at=now))
    rows = conn.execute(
        select(referrals.c.id.label("referral_id"), referrals.c.attempts,
               partners.c.name.label("partner"), partners.c.kind, partners.c.email,
               partners.c.webhook_url, partners.c.secret, reports)
        .join(partners, partners.c.id == referrals.c.partner_id)
        .join(reports, reports.c.id == referrals.c.report_id)
        .where(referrals.c.id.in_(ids)).order_by(referrals.c.id)).all()
    jobs = []
    for row in rows:
        secret = None
        if row.kind == "webhook" and row.secret:
            try:
                secret = open_secret(keys, row.secret, name=row.partner)
            except Exception as exc:  # a key file that is not the one it was sealed with
                log.error("referral %d: the partner's secret cannot be opened (%s)",
                          row.referral_id, exc.__class__.__name__)
        jobs.append(Job(row.referral_id, row.id, row.partner, row.kind, row.email,
                        row.webhook_url, secret, row.attempts,
                        payload(row, vocab=vocab, referral_id=row.referral_id, now=now)))
    return jobs


def send(job: Job, *, vocab: Vocabulary, mail: Mail, http: httpx.Client | None,
         now: datetime) -> str | None:
    """Send one referral: None when the partner accepted it, else an error code."""
    body = body_of(job.data)
    try:
        if job.kind == "email":
            if not mail.configured or job.email is None:
                return "smtp_not_configured"
            assert mail.host is not None and mail.sender is not None
            message = email_message(job.data, body, vocab=vocab, sender=mail.sender,
                                    to=job.email, now=now)
            with smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout) as smtp:
                if mail.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if mail.user:
                    smtp.login(mail.user, mail.password or "")
                smtp.send_message(message)
            return None
        if job.secret is None or job.url is None:
            return "secret_unreadable"
        assert http is not None
        response = http.post(job.url, content=body, headers={
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: signature(job.secret, body),
            DELIVERY_HEADER: str(job.referral_id),
            "User-Agent": "Dannaya-gateway",
        })
        if 200 <= response.status_code < 300:
            return None
        return f"http_{response.status_code}"
    except smtplib.SMTPResponseException as exc:
        return f"smtp_{exc.smtp_code}"
    except smtplib.SMTPRecipientsRefused:
        return "smtp_recipient_refused"
    except Exception as exc:  # the network, TLS, a timeout: a code, never the message
        return exc.__class__.__name__[:64]


def record(conn: Connection, *, job: Job, owner: str, error: str | None,
           now: datetime) -> str | None:
    """Record one send's outcome (only if this worker still holds the lease): the status
    the referral has now, or None when the lease was lost meanwhile."""
    mine = (referrals.c.id == job.referral_id) & (referrals.c.status == "sending") \
        & (referrals.c.lease_owner == owner)
    values: dict[str, Any]
    if error is None:
        status, values = "delivered", {"delivered_at": now, "last_error": None}
    elif job.attempts >= MAX_ATTEMPTS:
        status, values = "failed", {"last_error": error}
    else:
        wait = BACKOFF[min(job.attempts, len(BACKOFF)) - 1]
        status, values = "queued", {"last_error": error,
                                    "next_attempt_at": now + timedelta(seconds=wait)}
    changed = conn.execute(update(referrals).where(mine).values(
        status=status, lease_owner=None, lease_until=None, updated_at=now, **values)).rowcount
    if not changed:
        return None
    if status != "queued":
        reports_mod.event(conn, report_id=job.report_id, actor=WORKER,
                          action=f"referral_{status}", ref=job.partner, now=now)
        details: dict[str, str | int] = {"partner": job.partner, "attempts": job.attempts}
        if error is not None:
            details["error"] = error
        audit.record(conn, actor=WORKER, action=f"referral.{status}", object_type="referral",
                     object_id=job.referral_id, details=details, now=now)
    return status


def deliver_due(db: Database, *, keys: KeyRing, vocab: Vocabulary, mail: Mail, owner: str,
                now: datetime, limit: int = BATCH) -> tuple[int, bool]:
    """One step of delivery: claim, send, record. (How many were handled, whether more
    may be due now.)"""
    with db.transaction() as conn:
        jobs = claim(conn, keys=keys, vocab=vocab, owner=owner, now=now, limit=limit)
    if not jobs:
        return 0, False
    http = httpx.Client(timeout=SEND_TIMEOUT, follow_redirects=False) \
        if any(j.kind == "webhook" for j in jobs) else None
    try:
        for job in jobs:
            error = send(job, vocab=vocab, mail=mail, http=http, now=now)
            if error is not None:
                log.warning("referral %d to %s: attempt %d failed (%s)", job.referral_id,
                            job.partner, job.attempts, error)
            with db.transaction() as conn:
                record(conn, job=job, owner=owner, error=error, now=now)
    finally:
        if http is not None:
            http.close()
    return len(jobs), len(jobs) == limit
