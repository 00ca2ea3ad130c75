"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright, against `flow.cli() serve` (tests/helpers/proc_dashboard_flow.py) on 127.0.0.1.

Screenshots go to test-artifacts/dashboard/ (git-ignored; ASYNCFLOW_ARTIFACTS moves it). With
ASYNCFLOW_UPDATE_SCREENSHOTS=1 the README's screenshots (docs/screenshots/) are taken again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = HERE / "helpers" / "proc_dashboard_flow.py"
TOKEN = "browser-test-token"
ARTIFACTS = Path(os.environ.get("ASYNCFLOW_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # for what the page shows once its next poll (every 2 s) answers


def _chromium() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(tmp_path: Path, backend: str) -> Iterator[tuple[str, httpx.Client]]:
    """`serve` on a free port with a token; the base URL and a client with the token."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ASYNCFLOW_TOKEN", "ASYNCFLOW_BACKEND")
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "serve",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--backend",
            backend,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        headers = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, timeout=30, headers=headers) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.02)  # poll interval, not synchronisation: the loop polls /healthz
            yield base, http
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        # A failed run's traceback is logged with it (ERROR); any other would be a crash.
        records = re.split(r"\n(?=[A-Z]+: )", err)
        crashes = [
            r for r in records if "Traceback" in r and not re.match(r"ERROR: +asyncflow: run ", r)
        ]
        assert not crashes, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def shot(page: Page, name: str, *, readme: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if readme and os.environ.get("ASYNCFLOW_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


def new_page(browser: Browser, locale: str = "en-GB") -> tuple[Any, Page, list[str]]:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation before cancelling
    return context, page, errors


def log_in(page: Page, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    page.fill("#token", "wrong")
    page.click("#login-button")
    expect(page.locator("#login-failed")).to_be_visible()
    page.fill("#token", TOKEN)
    page.click("#login-button")
    expect(page.locator("section#runs")).to_be_visible()


@pytest.mark.parametrize("store", ["file", "memory"])
def test_log_in_watch_runs_open_a_timeline_emit_cancel_retry(
    browser: Browser, tmp_path: Path, store: str
) -> None:
    from playwright.sync_api import expect

    backend = f"file:{tmp_path / 'store'}" if store == "file" else "memory:"
    with serving(tmp_path, backend) as (base, http):
        context, page, errors = new_page(browser)
        log_in(page, base)
        # The session is an HttpOnly, Secure, SameSite=Strict cookie, not the token.
        (cookie,) = context.cookies()
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
        assert TOKEN not in cookie["value"]
        expect(page.locator("#no-runs")).to_be_visible()

        # Runs started elsewhere appear while the page is open (it polls).
        (order,) = [
            r
            for r in http.post("/runs", json={"trigger": "order"}).json()
            if r["workflow"] == "order"
        ]
        (fragile,) = http.post("/runs", json={"trigger": "fragile"}).json()
        (nap,) = http.post("/start", json={"trigger": "nap"}).json()["run_ids"]
        rows = page.locator("#runs-table tbody tr")
        expect(rows).to_have_count(5, timeout=WAIT_MS)
        expect(page.locator(f'tr[data-run="{order["run_id"]}"] .badge')).to_have_text("paused")
        expect(page.locator(f'tr[data-run="{fragile["run_id"]}"] .badge')).to_have_text("failed")
        expect(page.locator(f'tr[data-run="{order["run_id"]}"]')).to_contain_text("approved")
        shot(page, "runs", readme=True)

        # Filters and search narrow the list on the server.
        page.click('#status-filter [data-status="failed"]')
        expect(rows).to_have_count(1)
        expect(page.locator("#runs-table")).to_contain_text(fragile["run_id"])
        page.click('#status-filter [data-status=""]')
        expect(rows).to_have_count(5)
        page.select_option("#wait-filter", "event:approved")
        expect(rows).to_have_count(1)
        page.select_option("#wait-filter", "")
        page.fill("#search", nap[-6:])
        expect(rows).to_have_count(1)
        expect(page.locator("#runs-table")).to_contain_text(nap)
        page.fill("#search", "")
        expect(rows).to_have_count(5)

        # One run's timeline: lanes for the workflow and each branch, the wait's deadline.
        page.click(f'a[href="#/run/{order["run_id"]}"]')
        expect(page.locator("#timeline")).to_be_visible()
        expect(page.locator("#timeline .tl-lane")).to_have_count(3)
        expect(page.locator('.tl-lane[data-lane="2.0"] .tl-bar.sideeffect')).to_have_count(1)
        expect(page.locator(".tl-bar.wait_event.open")).to_have_count(1)
        expect(page.locator(".tl-deadline")).to_have_count(1)
        expect(page.locator("#steps")).to_contain_text("charge")
        expect(page.locator("#steps tr[data-kind=sideeffect]").first).to_contain_text(
            "2"
        )  # attempts
        expect(page.locator("#logs")).to_have_text("order of 2 items")
        shot(page, "run-paused")

        # Emit the event it waits for from the actions page; the run finishes.
        page.click("#nav-actions")
        page.fill("#emit-event", "approved")
        page.fill("#emit-args", '"alice"')
        page.click("#emit-button")
        expect(page.locator("#action-result")).to_contain_text("succeeded")
        page.goto(f"{base}/#/run/{order['run_id']}")
        expect(page.locator("#run .badge").first).to_have_text("succeeded")
        expect(page.locator("#result")).to_contain_text('"approval": "alice"')
        expect(page.locator(".tl-bar.wait_event.open")).to_have_count(0)
        shot(page, "run", readme=True)

        # Cancel the sleeping run and retry the failed one from the runs page.
        page.click("#nav-runs")
        page.locator(f'tr[data-run="{nap}"] [data-action=cancel]').click()
        expect(page.locator(f'tr[data-run="{nap}"] .badge')).to_have_text("cancelled")
        page.locator(f'tr[data-run="{fragile["run_id"]}"] [data-action=retry]').click()
        expect(page.locator(f'tr[data-run="{fragile["run_id"]}"] .badge')).to_have_text(
            "succeeded"
        )
        assert http.get(f"/runs/{nap}").json()["status"] == "cancelled"

        # Start a trigger with args and resume due runs from the actions page.
        page.click("#nav-actions")
        page.select_option("#start-trigger", "nap")
        page.select_option("#start-mode", "record")
        page.click("#start-button")
        expect(page.locator("#action-result a")).to_have_count(1)
        page.click("#resume-button")
        expect(page.locator("#action-result")).to_contain_text("paused")

        # Events: the graph, the history, the state.
        page.click("#nav-events")
        expect(page.locator('#graph [data-node="event:shipped"]')).to_have_count(1)
        expect(page.locator("#graph path.wakes")).to_have_count(1)
        expect(page.locator('#history tr[data-event="approved"]')).to_contain_text(order["run_id"])
        expect(page.locator('#state tr[data-state="orders"]')).to_contain_text("1")
        shot(page, "events", readme=True)

        # The same page in Japanese, switched by hand.
        page.select_option("#lang", "ja")
        expect(page.locator("#nav-runs")).to_have_text("実行")
        expect(page.locator("#events h2")).to_have_text("イベント")
        context.close()
        assert errors == []


def test_the_page_follows_the_browser_language(browser: Browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with serving(tmp_path, "memory:") as (base, http):
        http.post("/runs", json={"trigger": "fragile"})
        context, page, errors = new_page(browser, locale="ja-JP")
        page.goto(f"{base}/")
        expect(page.locator("#login-button")).to_have_text("ログイン")
        page.fill("#token", TOKEN)
        page.click("#login-button")
        expect(page.locator("#runs h2")).to_have_text("実行一覧")
        expect(page.locator("#runs-table .badge")).to_have_text("失敗")
        expect(page.locator("[data-action=retry]")).to_have_text("再実行")
        shot(page, "runs-ja", readme=True)
        # A run's page follows the run while an invocation elsewhere advances it.
        page.click("#runs-table a")
        expect(page.locator("#run .badge").first).to_have_text("失敗")
        (fragile,) = http.get("/runs").json()
        assert http.post(f"/runs/{fragile['run_id']}/retry").status_code == 200
        expect(page.locator("#run .badge").first).to_have_text("成功", timeout=WAIT_MS)
        expect(page.locator("#result")).to_have_text('"fine"')
        page.click("#nav-runs")
        page.select_option("#lang", "en")
        expect(page.locator("#runs h2")).to_have_text("Runs")
        page.reload()  # the choice is kept
        expect(page.locator("#runs h2")).to_have_text("Runs")
        page.click("#logout button")
        expect(page.locator("#login-button")).to_be_visible()
        assert context.cookies() == []
        context.close()
        assert errors == []


def test_another_sites_page_cannot_act_with_the_session(browser: Browser, tmp_path: Path) -> None:
    """A page of another origin on the same host (the same site, so the SameSite=Strict cookie
    goes along) posts the classic JSON-in-a-form request: refused, nothing started."""
    from playwright.sync_api import expect

    with serving(tmp_path, "memory:") as (base, http):
        context, page, _ = new_page(browser)
        log_in(page, base)
        evil = f"http://127.0.0.1:{_free_port()}/evil.html"
        form = (
            f'<form method="post" action="{base}/runs" enctype="text/plain">'
            """<input name='{"trigger":"nap","args":"' value='"}'></form>"""
            "<script>document.forms[0].submit()</script>"
        )
        page.route(evil, lambda route: route.fulfill(body=form, content_type="text/html"))
        with page.expect_response(f"{base}/runs") as answer:
            page.goto(evil)
        assert answer.value.status == 403
        assert answer.value.request.headers.get("cookie", "").startswith("asyncflow_session=")
        assert http.get("/runs").json() == []
        # The page itself still acts.
        page.goto(f"{base}/#/actions")
        page.select_option("#start-trigger", "nap")
        page.click("#start-button")
        expect(page.locator("#action-result")).to_contain_text("nap")
        assert [r["workflow"] for r in http.get("/runs").json()] == ["nap"]
        context.close()
