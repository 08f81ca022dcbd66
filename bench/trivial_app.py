"""The baseline for bench/ussd_hops.py: the least a USSD endpoint can do on the same
stack (FastAPI on uvicorn, one worker, no access log). It reads the form, as the gateway
must, and answers a fixed ``CON`` screen as text/plain.

    python -m uvicorn bench.trivial_app:app --no-access-log
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse

SCREEN = "CON Dannaya, service anonyme\n1. Signaler un fait (FDS)\n2. Sondage: confiance"

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/webhooks/africastalking/ussd", response_class=PlainTextResponse)
async def ussd(request: Request) -> PlainTextResponse:
    # python-multipart is not installed (the gateway parses its forms itself, too).
    fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"),
                            keep_blank_values=True, max_num_fields=64))
    if not fields.get("sessionId") or not fields.get("phoneNumber"):
        return PlainTextResponse("END Erreur")
    return PlainTextResponse(SCREEN)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
