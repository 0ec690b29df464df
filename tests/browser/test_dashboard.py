"""The dashboard in a real headless Chromium (Debian ``chromium``, driven by Playwright).

Data comes from the running platform: a simulated A/B test of two campaigns goes through the
broker and the analytics flow, and the API under uvicorn serves the page. Screenshots of each
view go to ``tests/artifacts/`` (gitignored). Skipped when ``/usr/bin/chromium`` is absent
(``apt-get install -y chromium``); never ``playwright install``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from flows.analytics.logic import analytics_state_dir
from simulators.ab import ABSimulation
from simulators.producer import EventProducer
from tests.analytics.conftest import ab_simulation
from tests.analytics.test_flow import analytics_settings
from tests.harness import ApiServer, FlowProcess, wait_caught_up

CHROMIUM = Path("/usr/bin/chromium")
SVG = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='8' height='8'%3E%3Crect width='8' height='8' fill='%232563eb'/%3E%3C/svg%3E"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ADMIN_KEY = "admin-dash-7c1e9b3f5a2d48e6"
"""The platform requires keys: the page must ask for this one and send it in a header, never a URL."""
ADMIN = {"X-API-Key": ADMIN_KEY}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium")]


def campaign(sim: ABSimulation, name: str) -> ABSimulation:
    spec = dataclasses.replace(sim.spec, campaign_id=name)
    return ABSimulation(spec, sim.item_ids, sim.prices, sim.n_users, sim.seed + 1)


LIVE_HOUR: list[int] = []
"""The hour the live campaign's events end in (set by the fixture): its bucket is open only until the hour turns."""


@pytest.fixture(scope="module")
def platform(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    s = analytics_settings(broker, tmp)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "require_keys": True, "admin_keys": [ADMIN_KEY], "client_keys": ["client-dash-0123456789ab"]})})
    home = ab_simulation(800, seed=3)
    events = sorted(home.events() + campaign(home, "cart").events(), key=lambda e: e.ts)
    # a third campaign whose newest bucket is still filling (events up to now): no cliff is drawn
    live = campaign(ab_simulation(40, seed=5), "live").events()
    lo, hi, now = min(e.ts for e in live), max(e.ts for e in live), time.time()
    live = [msgspec.structs.replace(e, ts=now - 3 * 3600 + (3 * 3600 - 1) * (e.ts - lo) / max(hi - lo, 1e-9))
            for e in live]  # the last three hours: the current hour's bucket is still open
    LIVE_HOUR.append(int(now // 3600))
    with EventProducer.from_settings(s.kafka) as p:
        # the catalog: titles (and a small inline image) for the top-items lists
        p.send_catalog({"item_id": i, "title": f"Product {i}", "image": SVG} for i in home.item_ids)
        p.send_events(events + live, progress=False)
        for bad in (b"{not json", b'{"type": "view"}'):  # two dead letters for the ops panel
            p.produce(s.kafka.events_topic, b"ab000001", bad)
    flow = FlowProcess(s, tmp / "analytics.toml", flow="flows.analytics.dataflow:flow").start()
    try:
        wait_caught_up(s, flow, timeout_s=120, state_dir=analytics_state_dir(s))
        with ApiServer(s, log_level="info") as api:  # access log on: the test reads it for the key
            for name in ("home", "cart"):  # the facade's campaigns: the optimizer folds the same rec_requests
                r = httpx.post(f"{api.url}/v1/campaigns", json={
                    "campaign_id": name, "scenario": "personalized", "goal": "purchase", "window_s": 3600,
                    "control_share": 0.2, "arms": [{"name": "covisit", "strategy": "personalized"},
                                                   {"name": "emde", "strategy": "popular"}]},
                               headers=ADMIN, timeout=10)
                assert r.status_code in (200, 201), r.text
            yield api
    finally:
        flow.stop()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_dashboard_renders_switches_campaign_and_range(platform):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    urls: list[str] = []
    access = _Lines()
    logging.getLogger("uvicorn.access").addHandler(access)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("request", lambda r: urls.append(r.url))
            page.goto(f"{platform.url}/dashboard")
            # keys are required: the page asks for the admin key (its first data call was a 401)
            expect(page.locator("#key-form")).to_be_visible(timeout=15000)
            expect(page.locator("#status")).to_have_text("waiting for the admin key")
            assert errors and all("401" in e for e in errors), errors
            errors.clear()
            page.fill("#key-input", ADMIN_KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#key-form")).to_be_hidden()
            # the analytics topic may still be loading: wait until a plot has data
            page.wait_for_function("() => Number(document.querySelector('#plot-traffic')?.dataset.points || 0) > 0",
                                   timeout=30000)
            assert page.locator("#plot-traffic canvas").count() == 1
            assert page.locator("#plot-ctr canvas").count() == 1
            assert page.locator("#campaign-list li").count() == 3
            first = page.locator("#plot-traffic").get_attribute("data-campaign")
            assert page.locator("#arms tbody tr").count() == 3  # two arms and the control requests
            # the optimizer's P(best) and share of pulls (GET /v1/campaigns/{id}/arms) are shown
            page.wait_for_function("() => [...document.querySelectorAll('#arms tbody tr td:last-child')]"
                                   ".some(td => td.textContent.includes('%'))")
            # the control row is not an arm of the optimizer: no share of pulls, no P(best) (as /arms says)
            control = page.locator("#arms tbody tr", has_text="control")
            assert control.locator("td").nth(11).inner_text() == "held back"
            assert control.locator("td").nth(12).inner_text() == "not an arm"
            arms = httpx.get(f"{platform.url}/v1/campaigns/{first}/arms", headers=ADMIN, timeout=10).json()
            assert "control" not in [a["arm"] for a in arms["arms"]]
            for a in arms["arms"]:  # each arm's share of pulls is rendered (the table fills cell by cell)
                share = page.locator("#arms tbody tr", has_text=a["arm"]).first.locator("td").nth(11)
                expect(share).to_have_text(re.compile(r"%$"), timeout=15000)
            # top items show the catalog's title and image, not bare ids
            first_item = page.locator("#top-impressed li").first
            item_id = first_item.get_attribute("data-item")
            assert first_item.locator(".title").inner_text() == f"Product {item_id}"
            assert first_item.locator("img.thumb").count() == 1
            # nothing in the ops panel is clipped at the right edge (model version, lag columns)
            clipped = page.evaluate("""() => { const box = document.querySelector('#ops').getBoundingClientRect();
                return [...document.querySelectorAll('#ops-model, #ops-lag th, #ops-lag td')]
                  .filter(e => e.getBoundingClientRect().right > box.right + 0.5).map(e => e.id || e.textContent); }""")
            assert clipped == []
            assert page.evaluate("() => { const o = document.querySelector('#ops'); return o.scrollWidth <= o.clientWidth; }")
            assert page.locator("#uplift-svg line.ci").count() == 3  # conversion, AOS, AOV intervals
            assert page.locator("#top-impressed li").count() > 0 and page.locator("#top-clicked li").count() > 0
            page.wait_for_function("() => document.querySelector('#ops-lag tbody').children.length === 4")
            dead = page.locator("#ops-dead tbody").inner_text()
            assert "malformed_json" in dead and "invalid_field" in dead
            page.screenshot(path=str(ARTIFACTS / "dashboard-campaign.png"), full_page=True)

            other = "cart" if first == "home" else "home"
            page.locator(f"#campaign-list li[data-campaign='{other}']").click()
            page.wait_for_function(f"() => document.querySelector('#plot-traffic').dataset.campaign === '{other}'")
            assert page.locator("#campaign-title").inner_text() == f"campaign {other}"
            page.screenshot(path=str(ARTIFACTS / "dashboard-other-campaign.png"), full_page=True)

            all_points = int(page.locator("#plot-traffic").get_attribute("data-points"))
            loads = int(page.locator("body").get_attribute("data-loads"))
            page.select_option("#range", "86400")
            page.wait_for_function(f"() => Number(document.body.dataset.loads) > {loads}")
            day_points = int(page.locator("#plot-traffic").get_attribute("data-points"))
            assert 0 < day_points < all_points
            page.screenshot(path=str(ARTIFACTS / "dashboard-last-24h.png"), full_page=True)

            page.select_option("#bucket", "day")
            page.select_option("#range", "all")
            page.wait_for_function("() => Number(document.querySelector('#plot-traffic').dataset.points) <= 3")
            page.screenshot(path=str(ARTIFACTS / "dashboard-daily.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

            # a campaign with data up to now: its newest bucket is still filling and is not drawn (no cliff)
            page.select_option("#bucket", "auto")
            loads = int(page.locator("body").get_attribute("data-loads"))
            page.locator("#campaign-list li[data-campaign='live']").click()
            page.wait_for_function("() => document.querySelector('#plot-traffic').dataset.campaign === 'live'")
            page.wait_for_function(f"() => Number(document.body.dataset.loads) > {loads}")
            open_bucket = page.locator("#plot-traffic").get_attribute("data-open-bucket")
            rep = httpx.get(f"{platform.url}/v1/analytics/campaigns/live", params={"bucket": "auto"}, headers=ADMIN,
                            timeout=10).json()
            if int(time.time() // 3600) != LIVE_HOUR[-1]:
                pytest.skip("the hour turned since the fixture wrote the live campaign: its newest bucket has closed")
            assert rep["open_bucket"] is not None and open_bucket == str(rep["open_bucket"]).removesuffix(".0")
            buckets = sorted({b for a in rep["arms"] for b in a["buckets"]})
            assert int(page.locator("#plot-traffic").get_attribute("data-points")) == len(buckets) - 1
            assert "in progress" in page.locator("#open-bucket").inner_text()
            page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"), full_page=True)
            # the arms table fits its column (bandit share and P(best) are not cut off)
            assert page.evaluate("() => { const t = document.querySelector('#arms');"
                                 " return t.parentElement.scrollWidth <= t.parentElement.clientWidth; }")
        finally:
            browser.close()
            logging.getLogger("uvicorn.access").removeHandler(access)
    assert errors == []
    # the key went in headers only: in no URL the browser requested, in no line of the server's access log
    assert any("/v1/analytics/" in u for u in urls) and any("/v1/analytics/" in line for line in access.lines)
    assert [u for u in urls if ADMIN_KEY in u] == []
    assert [line for line in access.lines if ADMIN_KEY in line] == []
    if shutil.which("true"):  # keep the artifact list visible in -s runs
        print("screenshots:", sorted(p.name for p in ARTIFACTS.glob("dashboard*.png")))


def test_an_old_link_with_the_key_in_its_url_is_scrubbed_and_not_used(platform):
    """``/dashboard?api_key=...`` (the old way): the page takes the key out of the address bar and its
    history at once, does not use or store it, and asks for the key in its form instead."""
    from playwright.sync_api import expect, sync_playwright

    leaked = "leaked-key-in-an-old-link"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(f"{platform.url}/dashboard?api_key={leaked}&campaign=cart")
            expect(page.locator("#key-form")).to_be_visible(timeout=15000)
            assert page.url == f"{platform.url}/dashboard?campaign=cart"
            assert page.evaluate("() => sessionStorage.length") == 0
            page.wait_for_timeout(500)
            assert [u for u in urls[1:] if leaked in u] == []  # only the navigation itself carried it
            # the history entry was replaced, not pushed: back is the blank tab, forward the scrubbed URL
            assert page.evaluate("() => history.length") == 2
            page.go_back()
            assert page.url == "about:blank"
            page.go_forward()
            assert page.url == f"{platform.url}/dashboard?campaign=cart"
        finally:
            browser.close()


def test_the_ops_panel_marks_a_stale_or_missing_answer(platform):
    """``GET /v1/analytics/ops`` answers its last good answer marked ``stale`` with its ``age_s`` when the broker
    does not confirm the log's ends in time, and a 503 when it has none young enough: the panel says so
    (``stale (N s old)``, ``unavailable``) next to the numbers it last drew, and drops the mark once fresh.
    The broker is the session's: its answers are rewritten in the browser (Playwright's routing)."""
    from playwright.sync_api import Route, expect, sync_playwright

    answer: dict[str, object] = {}

    def ops(route: Route) -> None:
        if answer.get("status") == 503:
            route.fulfill(status=503, headers={"Retry-After": "5"},
                          json={"error": {"field": "broker", "reason": "too old; retry later"}})
            return
        real = route.fetch()
        route.fulfill(response=real, json={**real.json(), **answer})

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.route("**/v1/analytics/ops", ops)
            page.goto(f"{platform.url}/dashboard")
            expect(page.locator("#key-form")).to_be_visible(timeout=15000)
            page.fill("#key-input", ADMIN_KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_function("() => document.querySelector('#ops-lag tbody').children.length === 4",
                                   timeout=30000)
            mark = page.locator("#ops-stale")
            expect(mark).to_be_hidden()  # a fresh answer: no mark
            answer.update({"stale": True, "age_s": 42.4, "stale_reason": "the event broker did not confirm in time"})
            expect(mark).to_be_visible(timeout=15000)  # the page polls every 5 s
            expect(mark).to_have_text("stale (42 s old)")
            assert mark.get_attribute("title") == "the event broker did not confirm in time"
            assert page.locator("#ops-lag tbody tr").count() == 4  # the numbers stay, marked
            page.screenshot(path=str(ARTIFACTS / "dashboard-ops-stale.png"))
            answer["status"] = 503
            expect(mark).to_have_text("unavailable", timeout=15000)
            answer.clear()
            expect(mark).to_be_hidden(timeout=15000)
        finally:
            browser.close()
