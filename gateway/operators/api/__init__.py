"""The operator API, mounted at ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``).

:func:`build_api` makes the sub-application: one router per domain, each in its own
module here, included below; the dependencies and the error mapping are in ``deps``.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from gateway.operators.api import (
    audit,
    auth,
    broadcasts,
    campaigns,
    digest,
    exports,
    flows,
    inclusion,
    partners,
    polls,
    reports,
)
from gateway.operators.api.deps import install_error_handlers
from gateway.operators.api.no_nul import RefuseNul
from gateway.runtime import Runtime
from gateway.settings import Settings


def build_api(settings: Settings, runtime: Callable[[], Runtime]) -> FastAPI:
    """The API app. ``runtime`` returns the running service's runtime (built when the
    service starts, after this is made). Its docs page (``/api/v1/docs``) is off in
    production; its OpenAPI document is part of the contract and always served."""
    api = FastAPI(title="Dannaya operator API", version="1",
                  openapi_url="/openapi.json",
                  docs_url=None if settings.is_production else "/docs", redoc_url=None)
    api.state.runtime = runtime
    api.state.settings = settings
    install_error_handlers(api)
    api.add_middleware(RefuseNul)  # before any endpoint: PostgreSQL text holds no NUL
    api.include_router(auth.router)
    api.include_router(audit.router)
    broadcasts.install(api)
    api.include_router(polls.router)
    api.include_router(campaigns.router)
    api.include_router(flows.router)
    api.include_router(inclusion.router)
    api.include_router(digest.router)
    api.include_router(reports.router)
    api.include_router(partners.router)
    api.include_router(exports.router)
    return api
