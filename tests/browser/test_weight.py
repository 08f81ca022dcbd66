"""Each page's first load, measured in the browser over an emulated 2G link: the bytes
received (HTML, CSS, JS, whatever the page asks for; gzip as sent) stay under 100 KB, and
nothing is asked of any other host. Load times are recorded, not asserted
(tests/browser/screenshots/weights.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.browser.conftest import SHOTS, Served, sign_in
from tests.browser.test_broadcasts import compose_for_konna

LIMIT = 100 * 1024
# About 2G (EDGE): 250 kbit/s down, 50 up, 500 ms round trips.
TWO_G = {"offline": False, "latency": 500, "downloadThroughput": 250_000 / 8,
         "uploadThroughput": 50_000 / 8}


def test_every_page_loads_under_100_kb_over_2g(page: Page, served: Served) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})  # every load is a first
    cdp.send("Network.emulateNetworkConditions", TWO_G)
    received: list[int] = []
    hosts: set[str] = set()
    cdp.on("Network.loadingFinished", lambda e: received.append(int(e["encodedDataLength"])))
    cdp.on("Network.requestWillBeSent",  # (data: and about: URLs have no host)
           lambda e: hosts.add(urlsplit(e["request"]["url"]).netloc or "-"))
    results: dict[str, dict[str, Any]] = {}

    def measure(name: str, go: Callable[[], object]) -> None:
        received.clear()
        go()
        page.wait_for_load_state("networkidle")
        timing = page.evaluate("(() => { const n = performance.getEntriesByType"
                               "('navigation')[0]; return [n.domContentLoadedEventEnd, "
                               "n.loadEventEnd]; })()")
        results[name] = {"bytes": sum(received), "requests": len(received),
                         "dom_content_loaded_ms": round(timing[0]),
                         "load_ms": round(timing[1])}

    measure("login", lambda: page.goto("/dashboard/login"))
    sign_in(page)
    measure("home", lambda: page.goto("/dashboard/"))
    measure("compose", lambda: page.goto("/dashboard/broadcasts/new"))
    compose_for_konna(page)
    measure("check", lambda: page.get_by_role("button", name="Vérifier avant l'envoi").click())
    measure("progress", lambda: page.get_by_role("button", name="Envoyer à 2 personnes")
            .click())
    expect(page.get_by_role("status")).to_contain_text("Diffusion créée.")
    measure("list", lambda: page.goto("/dashboard/broadcasts"))
    measure("cancel", lambda: page.goto("/dashboard/broadcasts/1/cancel"))

    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "weights.json").write_text(json.dumps(results, indent=1) + "\n")
    assert hosts - {"-"} == {urlsplit(served.url).netloc}
    heavy = {name: r["bytes"] for name, r in results.items() if r["bytes"] >= LIMIT}
    assert heavy == {}
    assert all(r["bytes"] > 1000 for r in results.values()), results  # measured something
