"""Settings, read from the environment (prefix ``GATEWAY_``) or a ``.env`` file.

Nothing reads settings at import time: the CLI builds a ``Settings`` and passes it to
``create_app(settings)`` and to the worker. Tests build their own.

Every field here is a documented setting: the README's settings table lists each one and
``tests/test_readme.py`` fails when one is missing.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.outbox.quiet import QuietHours


class Environment(StrEnum):
    development = "development"
    production = "production"


class ProviderName(StrEnum):
    fake = "fake"
    africastalking = "africastalking"
    kannel = "kannel"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", frozen=True
    )

    env: Environment = Field(Environment.development, description="`development` or `production`.")
    database_url: str = Field(
        "sqlite:///gateway.db",
        description="SQLAlchemy URL. Default: the SQLite file `gateway.db` in the current "
        "directory; `postgresql+psycopg://user@host/db` for PostgreSQL.",
    )
    key_file: Path = Field(
        Path("gateway.keys"),
        description="The key file (pseudonym HMAC key, master encryption keys). Created on "
        "first start in development, with a warning; required in production.",
    )
    content_dir: Path | None = Field(
        None,
        description="Folder holding `flows/` and `messages/`. Default: the current directory "
        "when it has a `flows/` folder, else the content shipped in the package.",
    )
    provider: ProviderName = Field(
        ProviderName.fake, description="`fake`, `africastalking` or `kannel`."
    )
    webhook_token: SecretStr | None = Field(
        None,
        description="When set, every webhook requires `?token=<value>` and answers 403 "
        "without it. Required in production.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="The gateway's own base URL, used to build delivery-report callback URLs.",
    )
    default_region: str = Field(
        "ML",
        description="Region used to read a phone number written without its country code.",
    )

    # USSD conventions (brief: "Conventions on the phone").
    ussd_budget: int = Field(
        160, ge=40, le=182,
        description="USSD screen budget in GSM-7 septets, `CON `/`END ` prefix not counted.",
    )
    ussd_next: str = Field("9", description="Digit(s) for the next page of a menu.")
    ussd_back: str = Field("0", description="Digit(s) for the previous page or step.")
    ussd_home: str = Field("00", description="Digit(s) for the main menu.")
    ussd_resume_minutes: int = Field(
        5, ge=0,
        description="A new dial within this many minutes of a dropped session from the same "
        "phone is offered to continue it (0 turns resuming off).",
    )
    flows_poll_seconds: float = Field(
        1.0, gt=0, le=10,
        description="How often, at most, each process reads the flow-publication counter "
        "(a primary-key read inside a hop it handles anyway): a published flow version "
        "reaches every replica within about this long, without a restart.",
    )
    transliterate: bool = Field(
        True,
        description="Send SMS in the GSM-safe form (Bambara ɛ ɔ ɲ ŋ as è ò ny ng, Fulfulde "
        "ɓ ɗ ƴ as b d y, French ê ç as e c). Off sends SMS text as the catalog writes it "
        "(UCS-2 where needed, about twice the segments). USSD screens are always GSM-safe.",
    )
    max_body_bytes: int = Field(
        16384, description="Webhook bodies larger than this get 413."
    )
    db_wait_seconds: float = Field(
        2.0, gt=0, le=8,
        description="The longest a webhook waits for the database (SQLite's write lock held "
        "elsewhere, PostgreSQL slow or unreachable) before answering 'try again later': the "
        "USSD apology screen, 503 for SMS and delivery reports (providers retry). Keep it "
        "well under the USSD provider's timeout.",
    )
    body_timeout_seconds: float = Field(
        10.0, gt=0,
        description="A webhook body that has not fully arrived this many seconds after the "
        "request's headers gets 408 and the connection is closed.",
    )
    ussd_code: str = Field(
        "*123#", description="The USSD code residents dial, quoted in SMS messages."
    )

    # SMS channel.
    sms_budget: int = Field(
        306, ge=70, le=1530,
        description="Septets one SMS question may take before it is split into pages "
        "(`9` for more). One GSM-7 segment is 160; `flows check` warns beyond that.",
    )
    stop_words: str = Field(
        "STOP,ARRET,ARRÊT,DABILA",
        description="Comma-separated words that stop all messages (case and accents folded).",
    )
    start_words: str = Field("START", description="Words that undo a stop.")
    help_words: str = Field(
        "AIDE,HELP,DƐMƐ,BALLAL",
        description="Words that ask for the help message, honoured at any point of an SMS "
        "dialogue (case and accents folded; Bambara and Fulfulde to be reviewed by a native "
        "speaker).",
    )
    erase_words: str = Field(
        "SUPPRIMER", description="Words that ask to erase the sender's data (confirmed first)."
    )
    yes_words: str = Field(
        "OUI,1,OWO,ƆWƆ,AWO,EEY,YES", description="Words that confirm a question by SMS."
    )

    # Outbound messages.
    send_rate: float = Field(
        10.0, gt=0,
        description="Messages per second sent through the provider, all workers together.",
    )
    send_lease_seconds: int = Field(
        60, ge=5,
        description="How long a worker holds a message it is sending. A message whose "
        "worker died is looked at again after this (a broadcast may go out once more; an "
        "acknowledgement is marked unknown, never resent). A live worker renews the lease of "
        "a send still waiting for its answer.",
    )
    send_timeout: float = Field(
        10.0, gt=0, le=120,
        description="Seconds one send waits for the provider's answer; without one by then "
        "it is ambiguous. A worker keeps up to rate x timeout sends in flight (at least 4, "
        "at most 256), so a hung request costs one of them, not the route.",
    )

    # Floods (per contact, by pseudonym).
    reply_budget_hour: int = Field(
        20, ge=1,
        description="Most SMS replies (answers, acknowledgements, help, and the answers to "
        "STOP, START and SUPPRIMER) one contact is sent in any hour. Beyond it their messages "
        "are still handled and stored, nothing is sent, and the excess is counted.",
    )
    reply_budget_day: int = Field(
        60, ge=1, description="Most SMS replies one contact is sent in any 24 hours.",
    )
    help_interval_minutes: int = Field(
        60, ge=1,
        description="The keyword help goes to one contact at most once in this many minutes.",
    )
    report_limit_hour: int = Field(
        5, ge=1,
        description="Most reports one contact files in any hour (USSD and SMS together). "
        "Beyond it a report gets the same acknowledgement, is not kept for review, and is "
        "counted.",
    )
    report_limit_day: int = Field(
        20, ge=1, description="Most reports one contact files in any 24 hours.",
    )
    retention_number_days: int = Field(
        180, ge=1,
        description="Phone numbers of contacts inactive this many days are deleted (they "
        "then receive no more broadcasts).",
    )
    retention_text_days: int = Field(
        180, ge=1, description="Typed report text older than this many days is deleted.",
    )
    retention_outbox_days: int = Field(
        7, ge=1,
        description="Finished outbound messages (and the sealed numbers in them) are deleted "
        "after this many days.",
    )
    max_queue: int = Field(
        100_000, description="`/readyz` fails while more messages than this wait to be sent.",
    )
    fake_smsc_url: str | None = Field(
        None,
        description="With the fake provider: also POST each message as JSON to this URL "
        "(a stand-in SMSC on loopback).",
    )

    # Operators (accounts, the API, the dashboard).
    token_hours: int = Field(
        12, ge=1, le=720,
        description="How long a token from `POST /api/v1/auth/token` lasts, in hours "
        "(command-line tokens last until revoked).",
    )
    session_hours: int = Field(
        8, ge=1, le=168,
        description="How long a dashboard sign-in lasts, in hours.",
    )

    # Broadcasts.
    sms_price: Decimal = Field(
        Decimal(0), ge=0,
        description="Price of one SMS segment, for the cost a broadcast's preview shows "
        "(0: unknown, no cost shown).",
    )
    currency: str = Field("XOF", description="Currency of `GATEWAY_SMS_PRICE`.")
    quiet_hours: str = Field(
        "21:00-07:00",
        description="Daily period (`HH:MM-HH:MM`, in `GATEWAY_TIMEZONE`) when broadcasts wait "
        "in the queue; empty for none. Direct replies to a resident are never held.",
    )
    timezone: str = Field(
        "Africa/Bamako", description="IANA time zone of `GATEWAY_QUIET_HOURS`."
    )

    # Poll results.
    min_cell: int = Field(
        5, ge=1,
        description="Poll results: a group with fewer respondents is suppressed wherever "
        "figures are shared (radio, on-air pages, exports), with whatever groups would let "
        "it be worked out; operators see it marked `small`.",
    )

    # Referrals of reports to partners by e-mail (gateway/operators/referrals.py).
    smtp_host: str | None = Field(
        None, description="SMTP server that sends referral e-mails; unset, e-mail partners "
        "cannot be added and nothing is sent by e-mail.",
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    smtp_user: str | None = Field(None, description="SMTP user name; unset, no login.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str | None = Field(
        None, description="The From address of referral e-mails (required with "
        "`GATEWAY_SMTP_HOST`).",
    )
    smtp_starttls: bool = Field(
        True, description="Upgrade the SMTP connection with STARTTLS before logging in and "
        "sending; `false` only for a relay on the same host.",
    )

    # Africa's Talking.
    at_username: str = Field("sandbox", description="Africa's Talking application username.")
    at_api_key: SecretStr | None = Field(None, description="Africa's Talking API key.")
    at_from: str | None = Field(
        None, description="Short code or sender id; unset, Africa's Talking's default."
    )
    at_sms_url: str | None = Field(
        None,
        description="Full messaging endpoint, e.g. `https://api.sandbox.africastalking.com/"
        "version1/messaging`. Default: live or sandbox, chosen by the username.",
    )

    # Kannel.
    kannel_sendsms_url: str | None = Field(
        None,
        description="smsbox's sendsms URL with its `username` and `password` query parameters.",
    )
    kannel_from: str | None = Field(None, description="Kannel sender: the short code.")

    # USSD over SMPP through Kannel (what differs between operators' USSD gateways).
    kannel_ussd_smsc: str = Field(
        "ussd",
        description="The `smsc-id` of Kannel's bind to the operator's USSD gateway; a call "
        "to the USSD webhook from another SMSC is not answered (empty: any).",
    )
    kannel_ussd_op_tlv: str = Field(
        "ussd_service_op",
        description="Name of the `smpp-tlv` group carrying the USSD operation.",
    )
    kannel_ussd_session_tlv: str = Field(
        "its_session_info",
        description="Name of the `smpp-tlv` group carrying the operator's session reference, "
        "echoed on every screen; empty when the operator sends none (sessions are then "
        "keyed on the phone alone).",
    )
    kannel_ussd_session_bytes: int = Field(
        1, ge=0, le=30,
        description="How many leading bytes of that parameter number the session: 1 for "
        "`its_session_info` (its session number; the second byte changes each message), 0 "
        "for all of it (a vendor parameter holding a session id).",
    )
    kannel_ussd_begin_ops: str = Field(
        "1", description="Operations (comma-separated numbers) that begin a session.",
    )
    kannel_ussd_answer_ops: str = Field(
        "18",
        description="Operations that carry the resident's answer; any other operation "
        "ends the session as dropped (resumable).",
    )
    kannel_ussd_wait_op: int = Field(
        2, ge=0, le=255, description="Operation sent with a screen that waits for input.",
    )
    kannel_ussd_end_op: int = Field(
        17, ge=0, le=255, description="Operation sent with a session's last screen.",
    )
    kannel_ussd_timeout: int = Field(
        180, ge=1,
        description="Seconds after which the operator has ended a session that got no "
        "answer: a later answer on it is refused with the apology, never applied.",
    )

    @field_validator("ussd_next", "ussd_back", "ussd_home")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError("navigation keys are digits")
        return value

    @field_validator("kannel_ussd_begin_ops", "kannel_ussd_answer_ops")
    @classmethod
    def _operations(cls, value: str) -> str:
        codes = [part.strip() for part in value.split(",") if part.strip()]
        if not codes or not all(c.isdigit() and int(c) <= 255 for c in codes):
            raise ValueError("USSD operations are comma-separated numbers from 0 to 255")
        return value

    @model_validator(mode="after")
    def _quiet_hours(self) -> Settings:
        QuietHours.parse(self.quiet_hours, self.timezone)  # raises ValueError naming the fault
        return self

    @property
    def quiet(self) -> QuietHours | None:
        """The quiet hours, parsed (None: none)."""
        return QuietHours.parse(self.quiet_hours, self.timezone)

    @model_validator(mode="after")
    def _distinct_navigation(self) -> Settings:
        keys = {self.ussd_next, self.ussd_back, self.ussd_home}
        if len(keys) != 3:
            raise ValueError("GATEWAY_USSD_NEXT, _BACK and _HOME must differ")
        return self

    @property
    def is_production(self) -> bool:
        return self.env is Environment.production

    @property
    def token(self) -> str | None:
        return self.webhook_token.get_secret_value() if self.webhook_token else None


def production_problems(settings: Settings) -> list[str]:
    """What stops ``settings`` from running in production (empty in development)."""
    if not settings.is_production:
        return []
    problems = []
    if not settings.token:
        problems.append("GATEWAY_WEBHOOK_TOKEN is required in production")
    return problems
