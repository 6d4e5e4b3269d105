"""`/dashboard` and its files as the referrals service serves them: a strict
Content-Security-Policy, every file the page loads served by the service itself (plotly.js
from the installed package), gzip and ETags, and nothing of it in the OpenAPI document. The
page in a real browser: tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re

from services.referrals.app import create_app
from services.referrals.dashboard.routes import ASSETS, takes_gzip
from shared.settings import Settings
from tests.conftest import running

IDENTITY = {"Accept-Encoding": "identity"}


async def test_the_page_has_a_strict_policy_and_loads_only_files_the_service_serves(settings):
    async with running(create_app(settings)) as client:
        page = await client.get("/dashboard", headers=IDENTITY)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = {
            directive.split()[0]: directive.split()[1:]
            for directive in page.headers["content-security-policy"].split("; ")
        }
        assert policy["default-src"] == ["'self'"]
        for directive in ("script-src", "style-src", "connect-src", "img-src"):
            assert policy[directive] == ["'self'"], directive
        assert policy["form-action"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"

        html = page.text
        # No inline script: neither a <script> with a body nor an on... attribute.
        assert not re.search(r"<script[^>]*>[^<]", html)
        assert not re.search(r"\son[a-z]+\s*=", html)
        loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
        own = [path for path in loaded if path.startswith("dashboard/assets/")]
        assert set(loaded) - set(own) == {"docs/assets/favicon.png"}  # the icon of /docs
        assert {path.removeprefix("dashboard/assets/") for path in own} == set(ASSETS)
        assert (await client.get("/docs/assets/favicon.png")).status_code == 200
        for path in own:
            asset = await client.get(f"/{path}", headers=IDENTITY)
            assert asset.status_code == 200, path
            assert (
                asset.headers["content-security-policy"] == page.headers["content-security-policy"]
            )
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            assert asset.headers["content-type"] == f"{kind}; charset=utf-8"
        plotly = await client.get("/dashboard/assets/plotly.min.js", headers=IDENTITY)
        assert plotly.text.startswith("/**\n* plotly.js v")
        # The ids of the stylesheets plotly.js would insert inline are in the page already.
        assert "<!-- plotly.js inline" not in html
        for id_ in re.findall(r'<meta name="plotly-inline-style" [^>]*id="([^"]+)">', html):
            assert f'document.getElementById("{id_}")' in plotly.text


async def test_files_go_gzipped_and_are_revalidated_by_etag(settings):
    async with running(create_app(settings)) as client:
        plain = await client.get("/dashboard/assets/plotly.min.js", headers=IDENTITY)
        assert "content-encoding" not in plain.headers
        packed = await client.get(
            "/dashboard/assets/plotly.min.js", headers={"Accept-Encoding": "gzip"}
        )
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == plain.content  # httpx decoded it
        assert int(packed.headers["content-length"]) < len(plain.content) / 2
        assert packed.headers["vary"] == "Accept-Encoding"
        assert packed.headers["etag"] != plain.headers["etag"]

        again = await client.get(
            "/dashboard/assets/plotly.min.js",
            headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]},
        )
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == packed.headers["etag"]
        page = await client.get("/dashboard", headers={"If-None-Match": plain.headers["etag"]})
        assert page.status_code == 200  # another file's tag


async def test_nothing_else_is_served_under_the_assets(settings):
    async with running(create_app(settings)) as client:
        for name in ("dashboard.html", "..%2Froutes.py", "plotly.js", "routes.py"):
            response = await client.get(f"/dashboard/assets/{name}")
            assert response.status_code == 404, name
            assert response.headers["content-type"] == "application/problem+json"


def test_the_page_stays_out_of_the_openapi_document():
    document = create_app(Settings(database_url="postgresql://unused/none")).openapi()
    assert not [path for path in document["paths"] if path.startswith("/dashboard")]


def test_gzip_is_sent_only_to_clients_that_take_it():
    assert takes_gzip("gzip, deflate, br")
    assert takes_gzip("br;q=1.0, gzip;q=0.8")
    assert not takes_gzip("")
    assert not takes_gzip("identity")
    assert not takes_gzip("gzip;q=0, deflate")
