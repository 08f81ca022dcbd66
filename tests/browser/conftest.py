"""Browser tests: the real app served by uvicorn on a free 127.0.0.1 port (an SQLite file,
the fake provider, the outbox worker running), driven by Playwright through Debian's
Chromium (/usr/bin/chromium, installed by scripts/install-chromium; Playwright downloads
nothing). Without Chromium these tests skip with the reason "service missing", which
GATEWAY_TEST_REQUIRE_SERVICES=1 turns into a failure.

Screenshots of each page at 1280x800 and 360x640 go to tests/browser/screenshots/
(git-ignored), with the measured page weights in weights.json.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from gateway.app import create_app, deliver
from gateway.channels.base import DeliveryReport, DeliveryStatus
from gateway.channels.fake import FakeSender
from gateway.operators.dashboard.seams import Seams
from gateway.runtime import Runtime, build_runtime, run_worker
from gateway.settings import Settings
from tests.conftest import REPO, SERVICE_MISSING
from tests.operators.dashboard_client import OPERATOR, PASSWORD, seams_for
from tests.operators.residents import RESIDENTS, seed

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "screenshots"
SIZES = ((1280, 800), (360, 640))


@dataclass
class Served:
    url: str
    rt: Runtime
    seams: Seams

    def report_deliveries(self) -> int:
        """The fake provider reports every message it took as delivered (as a handset's
        delivery report would come back through the provider's webhook)."""
        sender = self.rt.sender
        assert isinstance(sender, FakeSender)
        done = 0
        for message in list(sender.sent):
            outcome = deliver(self.rt, DeliveryReport(
                "fake", DeliveryStatus.delivered, "DELIVRD",
                provider_message_id=f"fake-{message.outbox_id}"))
            done += outcome == "matched"
        return done


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.skip(f"{SERVICE_MISSING}: Chromium ({CHROMIUM}; scripts/install-chromium "
                    "installs Debian's chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    yield chromium
    chromium.close()


@pytest.fixture
def served(tmp_path: Path, sqlite_template: Path) -> Iterator[Served]:
    database = tmp_path / "gateway.db"
    shutil.copyfile(sqlite_template, database)
    settings = Settings(_env_file=None, database_url=f"sqlite:///{database}",
                        key_file=tmp_path / "gateway.keys", content_dir=REPO, send_rate=1000.0,
                        # (broadcasts' settings: no quiet hours whatever the hour, a price)
                        quiet_hours="", sms_price=Decimal(25))
    rt = build_runtime(settings)
    app = create_app(settings, runtime=rt, background=run_worker)
    app.state.dashboard_seams = seams_for(rt)
    seed(rt, RESIDENTS)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", rt, app.state.dashboard_seams)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        rt.db.dispose()


@dataclass
class Watch:
    """What the page complained about: script errors and CSP refusals."""

    problems: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        text = message.text
        refused = "Content Security Policy" in text
        if refused or (message.type == "error" and "Failed to load resource" not in text):
            self.problems.append(text)


@pytest.fixture
def page(browser: Browser, served: Served) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR",
                                  base_url=served.url)
    tab = context.new_page()
    watch = Watch()
    tab.on("console", watch.console)
    tab.on("pageerror", lambda error: watch.problems.append(str(error)))
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
    assert watch.problems == []


def sign_in(page: Page, name: str = OPERATOR.name, password: str = PASSWORD) -> None:
    page.goto("/dashboard/login")
    page.get_by_label("Nom d'utilisateur").fill(name)
    page.get_by_label("Mot de passe").fill(password)
    page.get_by_role("button", name="Se connecter").click()


def shoot(page: Page, name: str) -> None:
    """Screenshots at both sizes; at 360 px wide nothing may stick out sideways."""
    SHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=SHOTS / f"{name}-{width}x{height}.png", full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} is {overflow} px wide at {width} px"
    if size is not None:
        page.set_viewport_size(size)
