"""`make demo`: one returnee's reintegration pathway across partners, webhook by webhook.

Against a hub started with `make run`, this script plays the coordination and four partners'
information systems, through the public API only:

1. it registers the demo partners and their services, idempotently (found by name, and by
   partner and service type), and gives each partner a new API key;
2. it starts a webhook receiver on a free loopback port and registers one endpoint per
   partner (deleting the endpoints a previous demo left behind, known by their description);
3. IOM creates a case with a four-step plan: cash on arrival that IOM delivers itself, then
   psychosocial counselling and vocational training side by side, then job placement;
4. every signed webhook is verified (Standard Webhooks, with the secret of the endpoint it
   arrived at) and narrated as it arrives, while each partner's "system" accepts, starts and
   completes the referrals addressed to it, until `case.pathway_completed` arrives.

It ends with the pathway as the referrals service records it and, on success, the URL of the
coordination's dashboard (`/dashboard` of the referrals service). Exit code 0 on success, 1 on
any failure. Nothing personal is printed beyond the invented case's reference.

    .venv/bin/python tools/demo.py [--registry URL] [--referrals URL] [--notifications URL]

The admin key is the first the hub accepts of RELAIS_ADMIN_KEY, RELAIS_BOOTSTRAP_ADMIN_KEY (the
key an operator gave `make run`) and $RELAIS_DATA_DIR/admin.key (default .data/admin.key, where
`make run` keeps the key it creates).

When it ends, on success, failure or Ctrl-C, the demo leaves the hub as it found it for other
cases: its services are set inactive (the next run re-activates them), its endpoints deleted and
its keys revoked. The demo partners and cases stay, for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

# The hub client and the webhook receiver the tests and the bench use too (devkit/): found
# from the repository, as `python tools/demo.py` puts only tools/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devkit.client import HubClient, HubError, problem
from devkit.receiver import Received, Receiver

ENDPOINT_DESCRIPTION = "Relais demo receiver (tools/demo.py)"
KEY_NAME = "Relais demo (tools/demo.py)"
RETURN_AREA = "ML-1-03"  # the cercle of Kayes, in the Kayes region (ML-1)
PAUSE = 0.3  # seconds a caseworker "takes" between two actions: the story stays readable
DEFAULT_TIMEOUT = 60.0
ROUTING_SETTLES = 10.0  # seconds the router may take to see the services the demo changed


# --- The cast ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    service_type: str
    name: str
    areas: tuple[str, ...]
    response_hours: int = 72


@dataclass(frozen=True)
class PartnerSpec:
    slug: str  # the receiver's path: /hooks/<slug>
    label: str  # the short name in the narration
    name: str  # the partner's name in the directory: how the demo finds it again
    acronym: str
    kind: str
    contact_email: str
    event_types: tuple[str, ...]
    services: tuple[ServiceSpec, ...]


IOM = PartnerSpec(
    slug="iom",
    label="IOM",
    name="IOM Mali (demo)",
    acronym="IOM",
    kind="un_agency",
    contact_email="reintegration@iom-mali.demo.example.org",
    event_types=("referral.*", "case.*"),
    services=(ServiceSpec("immediate.cash", "Cash on arrival", ("ML",), 24),),
)
PARTNERS: tuple[PartnerSpec, ...] = (
    IOM,
    PartnerSpec(
        slug="hakili",
        label="HAKILI",
        name="ONG Hakili Sabati (demo)",
        acronym="HAKILI",
        kind="ngo",
        contact_email="accueil@hakili-sabati.demo.example.org",
        event_types=("referral.*",),
        services=(
            ServiceSpec(
                "psychosocial.individual_counselling",
                "Psychosocial support, Bamako and a mobile team in the Kayes region",
                ("ML-BKO", "ML-1"),
                48,
            ),
        ),
    ),
    PartnerSpec(
        slug="cfk",
        label="CFK",
        name="Centre de formation Kayes (demo)",
        acronym="CFK",
        kind="private",
        contact_email="inscriptions@cf-kayes.demo.example.org",
        event_types=("referral.*",),
        services=(
            ServiceSpec(
                "economic.vocational_training",
                "Vocational training: solar installation, tailoring, mechanics",
                ("ML-1",),
            ),
        ),
    ),
    PartnerSpec(
        slug="anpe",
        label="ANPE",
        name="ANPE Mali (demo)",
        acronym="ANPE",
        kind="government",
        contact_email="placement@anpe-mali.demo.example.org",
        event_types=("referral.*",),
        services=(ServiceSpec("economic.job_placement", "Job placement", ("ML",)),),
    ),
)
COORDINATION_SLUG = "coordination"

# The plan: 1 (direct, IOM) -> 2 and 3 side by side -> 4 after 3.
# The coordination prefers the demo's services (admins set priority; lower is preferred), so
# that other services on the same hub, covering the same areas, do not take the demo's
# referrals. A service covering the returnee's area more specifically still would.
DEMO_PRIORITY = 1

PLAN: tuple[dict[str, Any], ...] = (
    {
        "key": "1",
        "service_type": "immediate.cash",
        "priority": "emergency",
        "delivery": "direct",
        "depends_on": [],
        "notes": "Cash on arrival, paid by IOM at the transit centre.",
    },
    {
        "key": "2",
        "service_type": "psychosocial.individual_counselling",
        "priority": "urgent",
        "depends_on": ["1"],
        "notes": "Individual sessions with the mobile team.",
    },
    {
        "key": "3",
        "service_type": "economic.vocational_training",
        "depends_on": ["1"],
        "notes": "Interested in solar installation.",
    },
    {
        "key": "4",
        "service_type": "economic.job_placement",
        "depends_on": ["3"],
        "notes": "Apprenticeship after the training.",
    },
)
OUTCOMES = {
    "psychosocial.individual_counselling": "Six counselling sessions held; follow-up planned.",
    "economic.vocational_training": "Certificate in solar installation obtained.",
    "economic.job_placement": "Apprenticeship with a solar installer in Kayes.",
}


# --- Output ------------------------------------------------------------------------------


class Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


STYLE = Style(sys.stdout.isatty() and not os.environ.get("NO_COLOR"))


def say(text: str = "") -> None:
    print(text, flush=True)


def fail_line(text: str) -> None:
    print(STYLE.red(f"error: {text}"), file=sys.stderr, flush=True)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --- The hub's API -----------------------------------------------------------------------


class DemoError(HubError):
    """A failure the demo explains in one message and ends on (exit code 1)."""


class Hub(HubClient):
    """The hub's client (devkit/client.py), raising the demo's error."""

    error = DemoError


def check_ready(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        try:
            response = httpx.get(f"{url}/readyz", timeout=3, trust_env=False)
        except httpx.HTTPError as exc:
            raise DemoError(
                f"the {name} service does not answer at {url} ({type(exc).__name__}). "
                "Start the hub with `make run` in another terminal, then run `make demo` again."
            ) from exc
        if response.status_code != 200:
            raise DemoError(
                f"the {name} service at {url} is not ready ({url}/readyz answered "
                f"{response.status_code}). Wait for `make run` to say it is running."
            )


ADMIN_KEY_HINT = (
    "set RELAIS_ADMIN_KEY to the admin key `make run` printed (or RELAIS_DATA_DIR to where "
    "the hub keeps its data)"
)


@dataclass(frozen=True)
class KeySource:
    """Where the demo looked for an admin key, and the key found there (None: nothing)."""

    origin: str
    key: str | None
    missing: str  # what the place held when no key was there: "unset", "not found", ...


def admin_key_sources() -> list[KeySource]:
    """The places an admin key may be, in order: RELAIS_ADMIN_KEY, the launcher's
    RELAIS_BOOTSTRAP_ADMIN_KEY, and $RELAIS_DATA_DIR/admin.key (default .data/admin.key)."""
    sources = [
        KeySource(name, os.environ.get(name, "").strip() or None, "unset")
        for name in ("RELAIS_ADMIN_KEY", "RELAIS_BOOTSTRAP_ADMIN_KEY")
    ]
    path = Path(os.environ.get("RELAIS_DATA_DIR") or ".data") / "admin.key"
    try:
        sources.append(KeySource(str(path), path.read_text().strip() or None, "empty"))
    except OSError:
        sources.append(KeySource(str(path), None, "not found"))
    return sources


def no_admin_key(sources: list[KeySource]) -> str:
    """The one line that says where the demo looked and what to set."""
    looked = ", ".join(f"{s.origin} ({s.missing})" for s in sources)
    return f"no admin key: looked in {looked}; {ADMIN_KEY_HINT}."


# --- The demo ----------------------------------------------------------------------------


@dataclass
class Party:
    """A partner's system in the demo (or the coordination's), as set up on the hub."""

    slug: str
    label: str
    key: str
    name: str
    id: str | None = None  # None: the coordination
    spec: PartnerSpec | None = None
    key_id: str | None = None
    secret: str | None = None
    endpoint_id: str | None = None
    services: dict[str, dict[str, Any]] = field(default_factory=dict)


class Demo:
    def __init__(self, hub: Hub, key_sources: list[KeySource], timeout: float) -> None:
        self.hub = hub
        self.key_sources = key_sources
        self.admin = ""  # the first key of key_sources the hub accepts (check_admin)
        self.timeout = timeout
        self.parties: dict[str, Party] = {}
        self.names: dict[str, str] = {}  # partner id -> name, for the table
        self.receiver = Receiver(respond=self.answer_webhook, port=0)
        self.case: dict[str, Any] | None = None
        self.case_known = asyncio.Event()
        self.steps: dict[str, dict[str, Any]] = {}  # step id -> step
        self.t0 = 0.0
        self.seen: set[tuple[str, str]] = set()
        self.received = 0
        self.verified = 0
        self.invalid = 0
        self.duplicates = 0
        self.other_cases = 0
        self.latencies: list[float] = []
        self.last_arrival = 0.0
        self.completed_direct: set[str] = set()
        self.pathway_completed: set[str] = set()  # slugs that received case.pathway_completed
        # The case owner's view of its referrals, to spot a second live referral for a step
        # already completed: then IOM cancels it, and the demo reports a hub anomaly.
        self.versions: dict[str, int] = {}  # referral id -> latest version seen
        self.live: dict[str, set[str]] = {}  # step id -> its live referrals
        self.done_steps: set[str] = set()
        self.cancelling: set[str] = set()
        self.anomalies: list[str] = []
        self.finished = asyncio.Event()
        self.error: str | None = None
        self.tasks: set[asyncio.Task] = set()

    # --- set-up ------------------------------------------------------------------------

    async def check_admin(self) -> None:
        """Take the first key found that the hub accepts as an admin key."""
        found = [source for source in self.key_sources if source.key]
        if not found:
            raise DemoError(no_admin_key(self.key_sources))
        path = "/queues/unassigned"
        url = f"{self.hub.referrals.base_url}".rstrip("/") + path
        refused: list[str] = []
        for source in found:
            try:
                response = await self.hub.referrals.get(
                    path, params={"limit": 1}, headers={"Authorization": f"Bearer {source.key}"}
                )
            except httpx.HTTPError as exc:
                raise DemoError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 200:
                assert source.key is not None
                self.admin = source.key
                say(f"  {'admin key':<14} from {source.origin}")
                say()
                return
            if response.status_code == 401:
                refused.append(f"{source.origin} (401: not a key of this hub)")
            elif response.status_code == 403:
                refused.append(f"{source.origin} (403: a partner's key)")
            else:
                raise DemoError(problem("GET", url, response))
        refusals = ", ".join(refused)
        raise DemoError(f"the hub refused the admin key from {refusals}; {ADMIN_KEY_HINT}.")

    async def set_up_partners(self) -> None:
        say(STYLE.bold("Demo partners (registry, with the admin key)"))
        say(f"  {'COORD':<7} the coordination: the admin key itself")
        self.parties[COORDINATION_SLUG] = Party(
            slug=COORDINATION_SLUG, label="COORD", key=self.admin, name="Coordination (admin)"
        )
        existing: dict[str, dict[str, Any]] = {}
        async for partner in self.hub.items("registry", "/partners", key=self.admin):
            self.names[partner["id"]] = partner["name"]
            existing.setdefault(partner["name"], partner)
        for spec in PARTNERS:
            partner = existing.get(spec.name)
            how = "found"
            if partner is None:
                partner = await self.hub.call(
                    "POST",
                    "registry",
                    "/partners",
                    key=self.admin,
                    json={
                        "name": spec.name,
                        "acronym": spec.acronym,
                        "kind": spec.kind,
                        "contact_email": spec.contact_email,
                    },
                )
                how = "created"
            elif partner["status"] != "active":
                partner = await self.hub.call(
                    "PATCH",
                    "registry",
                    f"/partners/{partner['id']}",
                    key=self.admin,
                    json={"status": "active"},
                )
                how = "found, reactivated"
            self.names[partner["id"]] = partner["name"]
            key = await self.hub.call(
                "POST",
                "registry",
                f"/partners/{partner['id']}/api-keys",
                key=self.admin,
                json={"name": KEY_NAME},
            )
            party = Party(
                slug=spec.slug,
                label=spec.label,
                key=key["key"],
                key_id=key["id"],
                name=partner["name"],
                id=partner["id"],
                spec=spec,
            )
            self.parties[spec.slug] = party
            say(f"  {spec.label:<7} {spec.name} ({spec.kind}): {how}; a new API key")
            await self.set_up_services(party)

    async def set_up_services(self, party: Party) -> None:
        assert party.spec is not None
        found: dict[str, dict[str, Any]] = {}
        async for service in self.hub.items(
            "registry", "/services", key=self.admin, params={"partner_id": party.id}
        ):
            found.setdefault(service["service_type"], service)
        for spec in party.spec.services:
            service = found.get(spec.service_type)
            how = "found"
            if service is None:
                service = await self.hub.call(
                    "POST",
                    "registry",
                    "/services",
                    key=self.admin,
                    json={
                        "partner_id": party.id,
                        "service_type": spec.service_type,
                        "name": spec.name,
                        "areas": list(spec.areas),
                        "response_hours": spec.response_hours,
                        "priority": DEMO_PRIORITY,
                    },
                )
                how = "created"
            elif (
                service["status"] != "active"
                or sorted(service["areas"]) != sorted(spec.areas)
                or service["priority"] != DEMO_PRIORITY
            ):
                # An earlier demo left it inactive (or someone changed it): it takes the demo's
                # referrals again until this run ends.
                changed = sorted(service["areas"]) != sorted(spec.areas) or (
                    service["priority"] != DEMO_PRIORITY
                )
                service = await self.hub.call(
                    "PATCH",
                    "registry",
                    f"/services/{service['id']}",
                    key=self.admin,
                    json={"status": "active", "areas": list(spec.areas), "priority": DEMO_PRIORITY},
                )
                how = "found, restored" if changed else "found, re-activated"
            party.services[spec.service_type] = service
            say(f"  {'':<7}   {spec.service_type} in {', '.join(spec.areas)}: {how}")

    async def check_routing(self, beneficiary: dict[str, Any], vulnerabilities: list) -> None:
        """Ask the router, without side effects, where each referral step would go: another
        partner's service on this hub would take the demo's referral and stall the story."""
        by_type = {st: p for p in self.parties.values() for st in p.services}
        # The router learns of a service re-activated above from its event, a moment later.
        deadline = time.monotonic() + ROUTING_SETTLES
        for step in PLAN:
            if step.get("delivery") == "direct":
                continue
            expected = by_type[step["service_type"]]
            while True:
                preview = await self.hub.call(
                    "POST",
                    "referrals",
                    "/routing/preview",
                    key=self.admin,
                    json={
                        "case": {
                            "beneficiary": {
                                "sex": beneficiary["sex"],
                                "birth_year": beneficiary["birth_year"],
                            },
                            "vulnerabilities": vulnerabilities,
                            "return": {"area_code": RETURN_AREA},
                        },
                        "service_type": step["service_type"],
                        "priority": step.get("priority", "normal"),
                    },
                )
                chosen = preview["chosen_partner_id"]
                if chosen == expected.id or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            if chosen != expected.id:
                other = self.names.get(chosen or "", chosen) if chosen else "no partner at all"
                raise DemoError(
                    f"on this hub, step {step['key']} ({step['service_type']}) in {RETURN_AREA} "
                    f"would be routed to {other}, not to the demo's {expected.name}: another "
                    "service covers the area more specifically or is preferred. Run the demo on "
                    "a hub without it (e.g. a fresh RELAIS_DATA_DIR)."
                )

    async def set_up_endpoints(self) -> None:
        await self.receiver.start()
        stale = [
            endpoint
            async for endpoint in self.hub.items("notifications", "/endpoints", key=self.admin)
            if endpoint["description"] == ENDPOINT_DESCRIPTION
        ]
        for endpoint in stale:
            await self.hub.call(
                "DELETE", "notifications", f"/endpoints/{endpoint['id']}", key=self.admin, ok=(204,)
            )
        say()
        say(
            STYLE.bold(f"Webhook receiver on http://127.0.0.1:{self.receiver.port}/hooks/<partner>")
            + (f" ({len(stale)} endpoint(s) of an earlier demo deleted)" if stale else "")
        )
        for party in self.parties.values():
            if party.spec is None:  # the coordination: an admin endpoint, for every case
                event_types = ["case.pathway_completed"]
            else:
                event_types = list(party.spec.event_types)
            # Each partner's system registers its own endpoint with its own key.
            endpoint = await self.hub.call(
                "POST",
                "notifications",
                "/endpoints",
                key=party.key,
                json={
                    "url": self.receiver.url_for(f"/hooks/{party.slug}"),
                    "event_types": event_types,
                    "description": ENDPOINT_DESCRIPTION,
                },
                hints={
                    422: "The demo's receiver listens on http://127.0.0.1: the notifications "
                    "service must allow private targets, as `make run` does (RELAIS_ENV="
                    "development, or NOTIFICATIONS_ALLOW_PRIVATE_TARGETS=true)."
                },
            )
            party.endpoint_id, party.secret = endpoint["id"], endpoint["secret"]
            say(f"  {party.label:<7} /hooks/{party.slug:<13} {', '.join(event_types)}")

    # --- the journey -------------------------------------------------------------------

    def new_case(self) -> dict[str, Any]:
        """An invented returnee (no real person), settling in the cercle of Kayes."""
        rng = random.SystemRandom()
        sex = rng.choice(["female", "male"])
        given = rng.choice(
            ["Aminata", "Fatoumata", "Kadiatou", "Mariam"]
            if sex == "female"
            else ["Moussa", "Seydou", "Bakary", "Oumar"]
        )
        today = datetime.now(UTC).date()
        return {
            "external_id": f"DEMO-{today:%Y%m%d}-{secrets.token_hex(4).upper()}",
            "beneficiary": {
                "given_name": given,
                "family_name": rng.choice(["Diarra", "Keita", "Sissoko", "Camara", "Diallo"]),
                "sex": sex,
                "birth_year": rng.randint(1990, 2004),
                "nationality": "ML",
                "languages": ["bm", "fr"],
                "household_size": rng.randint(1, 6),
            },
            "return": {
                "date": (today - timedelta(days=3)).isoformat(),
                "country_from": "LY",
                "area_code": RETURN_AREA,
            },
            "vulnerabilities": ["psychosocial_distress"],
            "consent": {
                "referral": "granted",
                "given_at": datetime.now(UTC).isoformat(),
                "method": "written",
            },
            "plan": [dict(step) for step in PLAN],
        }

    async def create_case(self, body: dict[str, Any]) -> None:
        iom = self.parties[IOM.slug]
        say()
        say(STYLE.bold("The journey"))
        say(STYLE.bold(f"{'time':>7} {'to':<6} {'event':<22} {'step':<37} latency"))
        self.t0 = time.monotonic()
        try:
            self.case = await self.hub.call("POST", "registry", "/cases", key=iom.key, json=body)
        finally:
            self.case_known.set()  # webhook handlers wait for it; on failure they ignore all
        assert self.case is not None
        self.steps = {step["id"]: step for step in self.case["plan"]}
        self.action(
            iom,
            f"creates case {self.case['reference']} (returnee settling in {RETURN_AREA}), "
            "consent granted",
        )
        self.action(
            iom,
            "plan: 1 cash (direct) -> 2 counselling + 3 training -> 4 job placement (after 3)",
        )

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:6.3f}s"

    def action(self, party: Party, text: str) -> None:
        say(STYLE.dim(clip(f"{self.elapsed()} {party.label:<6} > {text}", 100)))

    def step_label(self, step_id: str | None) -> str:
        step = self.steps.get(step_id or "")
        return f"{step['key']} {step['service_type']}" if step else "?"

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.finished.set()

    def answer_webhook(self, received: list[Received]) -> Awaitable[tuple[int, dict]]:
        """The receiver's answer to the request that just arrived (the demo keeps none)."""
        return self._answer(received.pop())

    async def _answer(self, request: Received) -> tuple[int, dict]:
        if request.method != "POST" or not request.path.startswith("/hooks/"):
            return 405, {}
        slug = request.path.removeprefix("/hooks/")
        return await self.on_webhook(slug, request.headers, request.body, request.wall), {}

    async def on_webhook(self, slug: str, headers: dict[str, str], body: bytes, at: float) -> int:
        party = self.parties.get(slug)
        if party is None or party.secret is None:
            return 404
        try:
            event = Webhook(party.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.received += 1
            self.invalid += 1
            say(STYLE.red(f"{self.elapsed()} {party.label:<6} SIGNATURE INVALID ({exc})"))
            self.fail(f"a webhook to {party.label} did not verify with its endpoint's secret")
            return 400
        self.received += 1
        self.verified += 1
        self.last_arrival = time.monotonic()
        if (slug, headers.get("webhook-id", "")) in self.seen:
            self.duplicates += 1  # at-least-once delivery: already narrated and acted on
            return 204
        self.seen.add((slug, headers.get("webhook-id", "")))
        try:
            await asyncio.wait_for(self.case_known.wait(), timeout=30)
        except TimeoutError:
            return 503
        if self.case is None or _case_of(event) != self.case["id"]:
            self.other_cases += 1  # another case on this hub (the coordination sees all)
            return 204
        sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        latency = max(0.0, (at - sent) * 1000)
        self.latencies.append(latency)
        say(
            f"{self.elapsed()} {party.label:<6} {event['type']:<22} "
            f"{clip(self.describe(event), 37):<37} {latency:>4.0f} ms  "
            + STYLE.green("signature ok")
        )
        self.react(party, event)
        return 204

    def describe(self, event: dict[str, Any]) -> str:
        data = event.get("data") or {}
        kind = event["type"]
        if kind.startswith("referral."):
            return self.step_label(data.get("step_id"))
        if kind == "case.step_completed":
            done = {s["id"] for s in data.get("plan", []) if s.get("status") == "completed"}
            new = sorted(done - self.completed_direct, key=lambda i: self.step_label(i))
            self.completed_direct |= done
            return ", ".join(self.step_label(i) for i in new) or "?"
        if kind == "case.pathway_completed":
            return f"{data.get('case_reference')}: {len(data.get('steps', []))} steps"
        return f"case {data.get('reference') or data.get('case_reference')}"

    def react(self, party: Party, event: dict[str, Any]) -> None:
        kind, data = event["type"], event.get("data") or {}
        owner = party.slug == IOM.slug
        if kind == "case.pathway_completed":
            self.pathway_completed.add(party.slug)
            if owner:
                self.finished.set()
            return
        if kind == "case.created" and owner:
            self.spawn(self.deliver_direct_steps(party, data))
            return
        if not kind.startswith("referral."):
            return
        if (
            kind in ("referral.created", "referral.assigned")
            and data.get("status") == "requested"
            and data.get("assignee_partner_id") == party.id
        ):
            self.spawn(self.work_on(party, data))
        if owner:  # the case owner hears of every change: it watches for trouble
            self.watch(party, kind, data)

    def watch(self, owner: Party, kind: str, data: dict[str, Any]) -> None:
        ours = {p.id for p in self.parties.values() if p.id}
        referral_id, step_id = data["id"], data["step_id"]
        step = self.step_label(step_id)
        if data.get("status") == "unassigned":
            self.fail(f"step {step} found no partner: the referral is unassigned")
        elif data.get("assignee_partner_id") not in ours:
            self.fail(f"step {step} went to a partner outside the demo")
        elif kind in ("referral.rejected", "referral.expired", "referral.failed"):
            self.fail(f"the referral for step {step} ended {data.get('status')}")
        elif kind == "referral.cancelled" and referral_id not in self.cancelling:
            self.fail(f"the referral for step {step} was cancelled")
        if int(data.get("version", 0)) < self.versions.get(referral_id, 0):
            return  # a stale update that arrived late (deliveries may come out of order)
        self.versions[referral_id] = int(data.get("version", 0))
        live = self.live.setdefault(step_id, set())
        if data.get("status") in ("requested", "accepted", "in_progress", "unassigned"):
            live.add(referral_id)
        else:
            live.discard(referral_id)
        if kind == "referral.completed":
            self.done_steps.add(step_id)
        if step_id in self.done_steps:
            for duplicate in sorted(live - self.cancelling):
                self.cancelling.add(duplicate)
                self.spawn(self.cancel_duplicate(owner, duplicate, step_id))

    async def cancel_duplicate(self, owner: Party, referral_id: str, step_id: str) -> None:
        step = self.steps.get(step_id, {}).get("key", "?")
        self.anomalies.append(
            f"referral {referral_id[:8]}... created for step {step} after it was completed"
        )
        say(
            STYLE.red(
                f"{self.elapsed()} {'HUB':<6} ! anomaly: a second referral for step {step}, "
                "which is already completed"
            )
        )
        self.action(owner, f"cancels that duplicate referral for step {step}")

        async def work() -> None:
            try:
                await self.hub.call(
                    "POST",
                    "referrals",
                    f"/referrals/{referral_id}/cancel",
                    key=owner.key,
                    json={"reason": "duplicate: step already completed"},
                )
            except DemoError as exc:
                if exc.status != 409:
                    raise
                self.action(owner, f"could not cancel it: it had ended already (step {step})")

        await self.guarded(owner, work())

    async def guarded(self, party: Party, work: Awaitable[None]) -> None:
        try:
            await work
        except DemoError as exc:
            say(STYLE.red(f"{self.elapsed()} {party.label:<6} ! {exc}"))
            self.fail(str(exc))

    async def deliver_direct_steps(self, party: Party, case: dict[str, Any]) -> None:
        async def work() -> None:
            for step in case.get("plan", []):
                if step["delivery"] != "direct" or step["status"] in ("completed", "cancelled"):
                    continue
                await asyncio.sleep(PAUSE)
                self.action(
                    party,
                    f"pays the cash grant itself and completes step {step['key']} "
                    "(direct) in the registry",
                )
                await self.hub.call(
                    "POST",
                    "registry",
                    f"/cases/{case['id']}/steps/{step['id']}/complete",
                    key=party.key,
                )

        await self.guarded(party, work())

    async def work_on(self, party: Party, referral: dict[str, Any]) -> None:
        """What a caseworker at the partner does with a new referral, through its system."""
        service_type = referral["service_type"]
        step = self.steps.get(referral["step_id"], {}).get("key", "?")
        outcome = OUTCOMES.get(service_type, "Service delivered.")
        actions = (
            ("accept", {"note": "Caseworker assigned."}, f"accepts the referral for step {step}"),
            ("start", {"note": "First appointment held."}, f"starts step {step}"),
            ("complete", {"outcome": outcome}, f"completes step {step}: {outcome}"),
        )

        async def work() -> None:
            for action, body, text in actions:
                await asyncio.sleep(PAUSE if action != "complete" else 2 * PAUSE)
                if referral["id"] in self.cancelling:
                    self.action(
                        party, f"stops: the case owner cancelled this referral (step {step})"
                    )
                    return
                self.action(party, text)
                try:
                    await self.hub.call(
                        "POST",
                        "referrals",
                        f"/referrals/{referral['id']}/{action}",
                        key=party.key,
                        json=body,
                    )
                except DemoError as exc:
                    if exc.status == 409 and referral["id"] in self.cancelling:
                        self.action(party, f"stops: the referral was cancelled (step {step})")
                        return
                    raise

        await self.guarded(party, work())

    async def wait_for_the_end(self) -> None:
        try:
            await asyncio.wait_for(self.finished.wait(), timeout=self.timeout)
        except TimeoutError:
            self.fail(f"no case.pathway_completed reached IOM within {self.timeout:.0f} s")
        if self.error is not None:
            return
        # The coordination's copy, the assignees' last webhooks and the caseworkers' last
        # calls may still be on their way: let them land, for a complete story.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self.last_arrival > 0.5
            if not self.tasks and quiet and COORDINATION_SLUG in self.pathway_completed:
                break
            await asyncio.sleep(0.05)

    # --- the end -----------------------------------------------------------------------

    async def print_pathway(self) -> dict[str, Any] | None:
        if self.case is None:
            return None
        iom = self.parties[IOM.slug]
        pathway = await self.hub.call(
            "GET", "referrals", f"/cases/{self.case['id']}/pathway", key=iom.key
        )
        say()
        say(
            STYLE.bold(
                f"Pathway of case {pathway['case_reference']} "
                f"(GET /cases/{{id}}/pathway, IOM's key): "
                f"{'completed' if pathway['completed'] else 'NOT completed'}"
            )
        )
        rows = [("step", "service type", "partner", "status", "attempts")]
        for step in pathway["steps"]:
            referrals = step["referrals"]
            if step["delivery"] == "direct":
                partner, attempts = f"{self.names.get(iom.id or '', 'IOM')}, direct", "-"
            elif referrals:
                assignee = referrals[-1]["assignee_partner_id"]
                partner = self.names.get(assignee or "", assignee or "(unassigned)")
                attempts = str(max(r["attempt"] for r in referrals))
            else:
                partner, attempts = "-", "0"
            rows.append(
                (step["key"], step["service_type"], clip(partner, 32), step["status"], attempts)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for n, row in enumerate(rows):
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            say(f"  {STYLE.bold(line) if n == 0 else line}")
            if n == 0:
                say("  " + "  ".join("-" * w for w in widths))
        return pathway

    def print_summary(self) -> None:
        lat = self.latencies
        timing = (
            f"latency median {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms"
            if lat
            else "no latency measured"
        )
        signatures = (
            STYLE.green(f"all {self.verified} signatures verified")
            if not self.invalid
            else STYLE.red(f"{self.invalid} INVALID signature(s)")
        )
        extra = []
        if self.duplicates:
            extra.append(f"{self.duplicates} redelivered")
        if self.other_cases:
            extra.append(f"{self.other_cases} about other cases, not narrated")
        say()
        for anomaly in self.anomalies:
            say(STYLE.red(clip(f"Hub anomaly (a bug in the services): {anomaly}.", 100)))
        say(
            f"Webhooks: {self.received} received"
            + (f" ({'; '.join(extra)})" if extra else "")
            + f"; {signatures}; {timing}."
        )

    async def clean_up(self) -> None:
        """Leave the hub as the demo found it for other cases: the demo's services stop taking
        referrals, this run's endpoints are deleted (their receiver goes away now) and its keys
        revoked. Runs on success, failure and Ctrl-C alike."""
        for task in list(self.tasks):
            task.cancel()
        inactive: list[str] = []
        for party in self.parties.values():
            for service in party.services.values():
                try:
                    await self.hub.call(
                        "PATCH",
                        "registry",
                        f"/services/{service['id']}",
                        key=self.admin,
                        json={"status": "inactive"},
                        ok=(200,),
                    )
                    inactive.append(service["service_type"])
                except DemoError as exc:
                    fail_line(f"clean-up: {exc}")
        for party in self.parties.values():
            try:
                if party.endpoint_id:
                    await self.hub.call(
                        "DELETE",
                        "notifications",
                        f"/endpoints/{party.endpoint_id}",
                        key=self.admin,
                        ok=(204, 404),
                    )
                if party.key_id:
                    await self.hub.call(
                        "DELETE",
                        "registry",
                        f"/api-keys/{party.key_id}",
                        key=self.admin,
                        ok=(204, 404),
                    )
            except DemoError as exc:
                fail_line(f"clean-up: {exc}")
        await self.receiver.stop()
        self.print_left_behind(inactive)

    def print_left_behind(self, inactive: list[str]) -> None:
        partners = [p for p in self.parties.values() if p.spec is not None]
        if not partners:
            return
        case = f"case {self.case['reference']}" if self.case else "no case"
        say()
        say(f"Left on the hub: the {len(partners)} demo partners and {case}, for inspection;")
        say(f"  their {len(inactive)} services set inactive, so other cases are not routed to them")
        say("  (the next `make demo` re-activates them); the demo's endpoints deleted and its")
        say("  API keys revoked.")

    @property
    def dashboard_url(self) -> str:
        return str(self.hub.referrals.base_url).rstrip("/") + "/dashboard"

    async def run(self) -> int:
        try:
            await self.check_admin()
            await self.set_up_partners()
            body = self.new_case()
            await self.check_routing(body["beneficiary"], body["vulnerabilities"])
            await self.set_up_endpoints()
            await self.create_case(body)
            await self.wait_for_the_end()
            pathway = await self.print_pathway()
            self.print_summary()
        except DemoError as exc:
            self.fail(str(exc))
            pathway = None
        finally:
            await self.clean_up()
        if self.error is None and self.invalid == 0 and pathway and pathway["completed"]:
            say(STYLE.green("The returnee's pathway is complete. Demo done."))
            say()
            say(f"The coordination's dashboard (it asks for the admin key): {self.dashboard_url}")
            return 0
        fail_line(self.error or "the pathway is not complete")
        return 1


def _case_of(event: dict[str, Any]) -> str | None:
    data = event.get("data") or {}
    if event["type"].startswith("case.") and event["type"] != "case.pathway_completed":
        return data.get("id")
    return data.get("case_id")


def _urls(args: argparse.Namespace) -> dict[str, str]:
    return {
        "registry": args.registry.rstrip("/"),
        "referrals": args.referrals.rstrip("/"),
        "notifications": args.notifications.rstrip("/"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def default(name: str, port: int) -> str:
        return f"http://127.0.0.1:{os.environ.get(f'{name.upper()}_PORT') or port}"

    parser = argparse.ArgumentParser(
        description="Play a returnee's reintegration pathway on a running hub (`make run`), "
        "narrating every signed webhook as it arrives."
    )
    parser.add_argument("--registry", default=default("registry", 8001), help="%(default)s")
    parser.add_argument("--referrals", default=default("referrals", 8002), help="%(default)s")
    parser.add_argument(
        "--notifications", default=default("notifications", 8003), help="%(default)s"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for case.pathway_completed (default %(default).0f)",
    )
    return parser.parse_args(argv)


async def _main(urls: dict[str, str], key_sources: list[KeySource], wait_seconds: float) -> int:
    async with Hub.connect(urls, timeout=15) as hub:
        return await Demo(hub, key_sources, wait_seconds).run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    urls = _urls(args)
    say(STYLE.bold("Relais demo: a returnee's reintegration pathway, webhook by webhook"))
    for name, url in urls.items():
        say(f"  {name:<14} {url}")
    try:
        check_ready(urls)
    except DemoError as exc:
        fail_line(str(exc))
        return 1
    try:
        return asyncio.run(_main(urls, admin_key_sources(), args.timeout))
    except KeyboardInterrupt:
        fail_line("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
