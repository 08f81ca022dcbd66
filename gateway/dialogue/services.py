"""The dialogue services built from settings: the engine's rules for each channel and the
USSD service. The composition (``gateway.runtime``) and the USSD database process both
build from here, so the child process needs nothing above the dialogue layer."""

from __future__ import annotations

from gateway.content.catalogs import Content
from gateway.dialogue.engine import Engine, Rules
from gateway.dialogue.library import Engines, Library
from gateway.dialogue.limits import Limits
from gateway.dialogue.ussd import UssdPolicy, UssdService
from gateway.privacy.keys import KeyRing
from gateway.settings import Settings
from gateway.store.db import Database


def engine_rules(settings: Settings) -> Rules:
    """USSD: screens always go out in the GSM-safe form (a UCS-2 screen holds half as
    much, and the flows are checked against that budget)."""
    return Rules(
        budget=settings.ussd_budget,
        next_key=settings.ussd_next,
        back_key=settings.ussd_back,
        home_key=settings.ussd_home,
        transliterate=True,
        params={"minutes": str(settings.ussd_resume_minutes), "ussd_code": settings.ussd_code},
    )


def sms_rules(settings: Settings) -> Rules:
    """SMS: the GSM-safe form unless ``GATEWAY_TRANSLITERATE`` is off (then UCS-2 where the
    catalog's letters need it, at about twice the segments)."""
    return Rules(
        budget=settings.sms_budget,
        next_key=settings.ussd_next,
        back_key=settings.ussd_back,
        home_key=settings.ussd_home,
        transliterate=settings.transliterate,
        sms=True,
        params={"minutes": str(settings.ussd_resume_minutes), "ussd_code": settings.ussd_code},
    )


def limits(settings: Settings) -> Limits:
    """Each contact's flood limits: replies sent by SMS, reports kept."""
    return Limits(replies_hour=settings.reply_budget_hour,
                  replies_day=settings.reply_budget_day,
                  reports_hour=settings.report_limit_hour,
                  reports_day=settings.report_limit_day)


def ussd_service(settings: Settings, *, db: Database, keys: KeyRing,
                 content: Content, library: Library | None = None) -> UssdService:
    """The USSD service with the deployment's rules and policy: over the flow versions
    published in the database (``library``), else over ``content``."""
    policy = UssdPolicy(default_region=settings.default_region,
                        resume_minutes=settings.ussd_resume_minutes,
                        line_timeout_seconds=settings.kannel_ussd_timeout,
                        limits=limits(settings), code=settings.ussd_code)
    engine: Engine | Engines = Engine(content, engine_rules(settings)) if library is None \
        else Engines(engine_rules(settings), library)
    return UssdService(db=db, keys=keys, engine=engine, policy=policy)
