"""The coordination's dashboard (SPEC 12) in a real headless Chromium, driven over the DevTools
protocol: the hub as processes with referrals in several states; the page opened on a
phone-sized screen; the admin key typed into its form; then what the page draws compared with
what the API answers for the very requests the page made: each chart's data with
`/indicators`, the gap table with `/gaps`, the lists with `/referrals` and
`/queues/unassigned`. The key stays in the tab's session storage (not a cookie, not the
address) and is asked once; every request the page makes goes to the hub's own origin; a link
to act opens its operation in `/docs`.

The browser is Debian's `chromium` (`.ci/run` installs it). Where there is none the test is
skipped, but not in CI (`CI` set): there it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest

from devkit.client import HubClient
from tests.e2e.processes import ADMIN_KEY, SERVICES, Services
from tests.factories import case_body, distinct_person

pytestmark = pytest.mark.slow

KEY_ITEM = "relais.dashboard.admin-key"  # where the page keeps the key (dashboard.js)
PHONE = {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}
COUNSELLING = "psychosocial.individual_counselling"
TRAINING = "economic.vocational_training"
API_PATHS = {"/indicators", "/gaps", "/referrals", "/queues/unassigned"}


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; without it the tests skip, except in CI where they fail. (Module
    scope and first in the tests' arguments: checked before the hub starts.)"""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("no chromium in CI: .ci/run installs Debian's chromium package")
    pytest.skip("no chromium binary (apt-get install chromium)")


# --- The browser, over the DevTools protocol --------------------------------------------


class Page:
    """One browser tab: DevTools commands and their answers, and every event it sent."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self._answers: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            answer = self._answers.pop(data.get("id"), None)
            if answer is None:
                self.events.append(data)
            elif "error" in data:
                answer.set_exception(AssertionError(f"DevTools: {data['error']}"))
            else:
                answer.set_result(data.get("result", {}))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        answer = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = answer
        await self.socket.send_json({"id": self._next_id, "method": method, "params": params})
        return await asyncio.wait_for(answer, timeout=30)

    async def evaluate(self, expression: str) -> Any:
        """The expression's value in the page (promises awaited), as JSON."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.evaluate(expression)
            except AssertionError as exc:  # a document being replaced
                last = exc
            if last and not isinstance(last, AssertionError):
                return last
            await asyncio.sleep(0.1)
        state = await self.evaluate("document.body && document.body.dataset.state")
        raise AssertionError(f"{expression} not true in {timeout} s ({last!r}; state {state!r})")

    async def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event.get("method") == method]


@asynccontextmanager
async def chromium_page(binary: str, profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium of its own (profile, loopback DevTools port), and its one tab."""
    profile.mkdir(parents=True)
    arguments = [
        binary,
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # a container's small /dev/shm would crash the tab
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--no-proxy-server",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    if os.geteuid() == 0:
        arguments.insert(1, "--no-sandbox")  # Chromium refuses to run as root with it
    with (profile.parent / "chromium.log").open("wb") as log:
        browser = subprocess.Popen(
            arguments, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert browser.poll() is None, f"chromium exited: see {profile.parent}/chromium.log"
            assert time.monotonic() < deadline, "chromium opened no DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            tab = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                page = Page(socket)
                try:
                    yield page
                finally:
                    page._reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, signal.SIGTERM)
        try:
            browser.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()


# --- The hub's data ---------------------------------------------------------------------


async def _referrals(hub: HubClient, case_id: str, count: int) -> list[dict]:
    """The case's referrals, once the router has made `count` of them."""
    deadline = time.monotonic() + 30
    while True:
        found = [r async for r in hub.items("referrals", "/referrals", params={"case_id": case_id})]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} referrals routed"
        await asyncio.sleep(0.1)


async def _act(hub: HubClient, partner: dict, referral: dict, action: str, **body: Any) -> None:
    await hub.call(
        "POST", "referrals", f"/referrals/{referral['id']}/{action}", key=partner["key"], json=body
    )


async def make_referrals(hub: HubClient) -> None:
    """Referrals in several states, over two service types and three regions: completed,
    accepted, requested, rejected, and unassigned ones (vocational training in Koulikoro,
    which no service covers: a gap)."""
    owner = await hub.partner("OIM Mali", kind="un_agency")
    counsel = await hub.partner("Centre Psy")
    training = await hub.partner("CF Kayes", kind="private")
    await hub.service(counsel, COUNSELLING, ["ML"])
    await hub.service(training, TRAINING, ["ML-1"], capacity=5)

    def case(n: int, area: str, *service_types: str) -> dict:
        plan = [{"service_type": s, "depends_on": []} for s in service_types]
        return case_body(
            external_id=f"DASH-{n}",
            beneficiary=distinct_person(n),
            plan=plan,
            **{"return": {"date": "2026-10-02", "country_from": "LY", "area_code": area}},
        )

    cases = [
        await hub.call("POST", "registry", "/cases", key=owner["key"], json=body, ok=(201,))
        for body in (
            case(1, "ML-1-03", COUNSELLING, TRAINING),  # Kayes: both covered
            case(2, "ML-2-04", COUNSELLING, TRAINING),  # Koulikoro: no training there
            case(3, "ML-3-01", COUNSELLING),  # Sikasso
        )
    ]
    first, second, third = [
        {r["service_type"]: r for r in await _referrals(hub, c["id"], n)}
        for c, n in zip(cases, (2, 2, 1), strict=True)
    ]
    await _act(hub, counsel, first[COUNSELLING], "accept")
    await _act(hub, counsel, first[COUNSELLING], "complete", outcome="Six sessions held")
    await _act(hub, training, first[TRAINING], "accept")
    await _act(hub, counsel, second[COUNSELLING], "reject", reason="No place before March")
    assert second[TRAINING]["status"] == "unassigned"
    assert third[COUNSELLING]["status"] == "requested"
    # The rejected step is routed again: no other candidate, so unassigned.
    await _referrals(hub, cases[1]["id"], 3)


# --- What the page should show, from the API's answers ----------------------------------


def status_chart(indicators: dict) -> list[dict]:
    """Per status (in the order the indicators give, those with a referral), the months and
    their counts."""
    rows = sorted(indicators["rows"], key=lambda row: row["month"])
    statuses: list[str] = []
    for row in rows:
        statuses += [s for s in row["by_status"] if s not in statuses]
    return [
        {
            "status": status,
            "x": [row["month"] for row in rows],
            "y": [row["by_status"].get(status) for row in rows],
        }
        for status in statuses
        if any((row["by_status"].get(status) or 0) > 0 for row in rows)
    ]


def acceptance_chart(indicators: dict) -> list[dict]:
    rows = sorted(indicators["rows"], key=lambda row: row["service_type"])
    return [
        {
            "measure": measure,
            "y": [row["service_type"] for row in rows],
            "x": [row[measure] for row in rows],
        }
        for measure in ("hours_to_acceptance_median", "hours_to_acceptance_p90")
    ]


def gap_table(gaps: dict, *, everything: bool) -> list[list[str]]:
    """The rows the table shows: by default those with demand, a gap or saturation."""

    def text(value: Any) -> str:
        return "—" if value is None else str(value)

    shown = []
    for row in gaps["rows"]:
        demand = row["demand"]
        if not (everything or row["gap"] or row["saturated"] or demand["total"] > 0):
            continue
        if row["free_capacity"] is not None:
            free = str(row["free_capacity"])
        else:
            free = "no limit" if row["services"] > 0 else "—"
        status = (
            "Gap"
            if row["gap"]
            else "Saturated"
            if row["saturated"]
            else ("Covered" if row["services"] > 0 else "—")
        )
        shown.append(
            [
                f"{row['area_name']} ({row['area_code']})",
                row["service_type"],
                text(demand["waiting_steps"]),
                text(demand["unassigned"]),
                text(demand["recent_referrals"]),
                text(row["services"]),
                free,
                status,
            ]
        )
    return shown


CHART_DATA = """(() => {
  const chart = document.getElementById(%r);
  return {
    traces: (chart.data || []).map(t => ({meta: t.meta, x: t.x, y: t.y})),
    drawn: chart.querySelectorAll('.barlayer .trace').length,
    labels: Array.from(chart.querySelectorAll('.barlayer .trace')).map(
      trace => Array.from(trace.querySelectorAll('text.bartext')).map(t => t.textContent)),
    bars: Array.from(chart.querySelectorAll('.barlayer .point path'))
      .filter(p => p.getBBox().width > 0 && p.getBBox().height > 0).length,
  };
})()"""
TABLE = """Array.from(document.querySelectorAll(%r)).map(
  tr => Array.from(tr.cells).map(td => td.textContent))"""
LIST = """Array.from(document.querySelectorAll(%r)).map(tr => tr.dataset.referralId)"""


async def _api(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_dashboard_draws_the_hubs_figures_in_a_real_browser(
    chromium: str, hub_processes: Services, tmp_path: Path
) -> None:
    urls = {name: hub_processes.url(name) for name in SERVICES}
    origin = urls["referrals"]
    async with HubClient.connect(urls, admin=ADMIN_KEY) as hub:
        await make_referrals(hub)

    async with (
        chromium_page(chromium, tmp_path / "profile") as page,
        httpx.AsyncClient(timeout=30, trust_env=False) as client,
    ):
        for domain in ("Network", "Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride", **PHONE)
        await page.send("Page.navigate", url=f"{origin}/dashboard")
        await page.wait_until("document.body.dataset.state === 'locked'")
        assert await page.evaluate("document.activeElement.id") == "key"

        # The key, typed into the form and submitted with Enter.
        await page.send("Input.insertText", text=ADMIN_KEY)
        await page.press_enter()
        await page.wait_until("document.body.dataset.state === 'ready'")
        sections = await page.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('section[data-state]'))"
            ".map(s => [s.id, [s.dataset.state, s.querySelector('.message').textContent]]))"
        )
        assert all(state in {"ready", "empty"} for state, _ in sections.values()), sections

        # Kept in the tab's session storage only, sent as a bearer token, never in a URL.
        assert await page.evaluate(f"sessionStorage.getItem({KEY_ITEM!r})") == ADMIN_KEY
        assert await page.evaluate("document.cookie") == ""
        assert await page.evaluate("location.href") == f"{origin}/dashboard"
        requests = [event["request"] for event in page.sent("Network.requestWillBeSent")]
        assert all(ADMIN_KEY not in request["url"] for request in requests)
        api_requests = [r for r in requests if urlsplit(r["url"]).path in API_PATHS]
        assert {urlsplit(r["url"]).path for r in api_requests} == API_PATHS
        for request in api_requests:
            assert request["headers"].get("Authorization") == f"Bearer {ADMIN_KEY}", request

        # Every request the page made went to the hub's own origin; plotly.js came from it.
        # (A data: URL holds its content and goes nowhere: Chromium draws the date fields'
        # calendar icon from one.)
        fetched = [r["url"] for r in requests if not r["url"].startswith("data:")]
        assert [url for url in fetched if not url.startswith(f"{origin}/")] == []
        paths = {urlsplit(r["url"]).path for r in requests}
        assert {"/dashboard", "/dashboard/assets/plotly.min.js"} <= paths

        # Each chart's data is the figures /indicators answers to the page's own request.
        by_group = {}
        for request in api_requests:
            if urlsplit(request["url"]).path == "/indicators":
                answer = await _api(client, request["url"])
                by_group[tuple(answer["group_by"])] = answer
        assert set(by_group) == {("month",), ("service_type",)}

        expected = status_chart(by_group[("month",)])
        assert {t["status"] for t in expected} >= {"requested", "completed", "unassigned"}
        drawn = await page.evaluate(CHART_DATA % "chart-status")
        traces = [{"status": t["meta"], "x": t["x"], "y": t["y"]} for t in drawn["traces"]]
        assert traces == expected
        assert drawn["drawn"] == len(expected)
        assert drawn["bars"] == sum(1 for t in expected for value in t["y"] if value)

        expected = acceptance_chart(by_group[("service_type",)])
        assert set(expected[0]["y"]) == {COUNSELLING, TRAINING}
        assert any(value is not None for value in expected[0]["x"])
        drawn = await page.evaluate(CHART_DATA % "chart-acceptance")
        traces = [{"measure": t["meta"], "y": t["y"], "x": t["x"]} for t in drawn["traces"]]
        assert traces == expected
        assert drawn["drawn"] == 2
        assert drawn["bars"] == sum(1 for t in expected for value in t["x"] if value)
        # Each bar is labelled with its figure, in hours to one decimal.
        for labels, trace in zip(drawn["labels"], expected, strict=True):
            figures = [value for value in trace["x"] if value is not None]
            assert len(labels) == len(figures), (labels, figures)
            for label, value in zip(labels, figures, strict=True):
                assert label.endswith(" h") and abs(float(label[:-2]) - value) <= 0.05, label

        # The gap table is /gaps: the rows that need attention, then every row.
        gaps_url = next(r["url"] for r in api_requests if urlsplit(r["url"]).path == "/gaps")
        assert "level=region" in gaps_url
        gaps = await _api(client, gaps_url)
        shown = await page.evaluate(TABLE % "#gaps-table tbody tr")
        assert shown == gap_table(gaps, everything=False)
        assert any(row[0] == "Koulikoro (ML-2)" and row[1] == TRAINING for row in shown), shown
        await page.evaluate(
            "(() => { const s = document.getElementById('gaps-filter');"
            " s.value = 'all'; s.dispatchEvent(new Event('change')); })()"
        )
        assert await page.evaluate(TABLE % "#gaps-table tbody tr") == gap_table(
            gaps, everything=True
        )

        # The lists: unassigned as /queues/unassigned; overdue: requested past the deadline.
        unassigned = [
            r["id"] for r in (await _api(client, f"{origin}/queues/unassigned?limit=500"))["items"]
        ]
        assert len(unassigned) == 2
        assert await page.evaluate(LIST % "#unassigned-table tbody tr") == unassigned
        requested = (await _api(client, f"{origin}/referrals?status=requested&limit=500"))["items"]
        overdue = await page.evaluate(LIST % "#overdue-table tbody tr")
        now = datetime.now(UTC)
        late = [r for r in requested if datetime.fromisoformat(r["deadline_at"]) < now]
        assert overdue == [r["id"] for r in sorted(late, key=lambda r: r["deadline_at"])]

        # Each link to act opens an operation of the service's /docs.
        document = await _api(client, f"{origin}/openapi.json")
        operations = {
            f"{operation['tags'][0]}/{operation['operationId']}"
            for item in document["paths"].values()
            for operation in item.values()
        }
        links = await page.evaluate(
            "Array.from(document.querySelectorAll('#board a[data-action]'))"
            ".map(a => a.getAttribute('href'))"
        )
        assert len(links) >= 2 * len(unassigned)
        for link in links:
            target, _, fragment = link.partition("#/")
            assert target == "docs" and fragment in operations, link

        # Readable on a phone: nothing is wider than the 375 px screen.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        # Nothing went wrong in the page, the Content-Security-Policy refused nothing.
        assert page.sent("Runtime.exceptionThrown") == []
        complaints = [
            entry["entry"]["text"]
            for entry in page.sent("Log.entryAdded")
            if entry["entry"]["level"] == "error"
        ]
        assert complaints == []

        # Asked once: a reload goes straight to the figures; "Forget the key" forgets it.
        await page.send("Page.reload")
        await page.wait_until("document.body.dataset.state === 'ready'")
        assert await page.evaluate("document.getElementById('unlock').hidden") is True
        await page.evaluate("document.getElementById('forget').click()")
        assert await page.evaluate("document.body.dataset.state") == "locked"
        assert await page.evaluate(f"sessionStorage.getItem({KEY_ITEM!r})") is None

        # An "assign" link opens that operation, unfolded, in Swagger UI.
        assign = next(link for link in links if link.endswith("/coordination-assign"))
        await page.send("Page.navigate", url=f"{origin}/{assign}")
        opened = await page.wait_until(
            "location.pathname === '/docs' && Array.from("
            "document.querySelectorAll('.opblock.is-open')).map(block => block.id).join()"
        )
        assert opened == "operations-coordination-coordination-assign"


async def test_a_partners_key_is_refused_and_forgotten(
    chromium: str, hub_processes: Services, tmp_path: Path
) -> None:
    urls = {name: hub_processes.url(name) for name in SERVICES}
    async with HubClient.connect(urls, admin=ADMIN_KEY) as hub:
        partner = await hub.partner("ONG Refusée")
    async with chromium_page(chromium, tmp_path / "profile") as page:
        await page.send("Page.navigate", url=f"{urls['referrals']}/dashboard")
        await page.wait_until("document.body.dataset.state === 'locked'")
        await page.send("Input.insertText", text=partner["key"])
        await page.press_enter()
        await page.wait_until("document.body.dataset.state === 'refused'")
        error = await page.evaluate("document.getElementById('key-error').textContent")
        assert "admin key" in error
        assert await page.evaluate(f"sessionStorage.getItem({KEY_ITEM!r})") is None
        assert await page.evaluate("document.getElementById('board').hidden") is True
