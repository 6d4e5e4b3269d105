"""`GET /dashboard`, the secretariat's page (SPEC 12), and the files it loads.

The page is static: its HTML, script and stylesheets come from `static/`, and plotly.js from
the installed `plotly` package, whose wheel ships the built library. The service serves all of
it, so the page works on a network without internet and loads nothing from elsewhere. Nothing
here reads the database or takes a key: the page asks for an admin key in the browser and
reads `/indicators`, `/gaps`, `/referrals` and `/queues/unassigned` with it.

Every answer carries a strict Content-Security-Policy (scripts, styles, images and requests
from this origin only; no inline script or style; no form submission; no framing). Files are
sent gzipped to browsers that take it (plotly.js: 4.8 MB, 1.5 MB gzipped), compressed once per
process, and revalidated by ETag on every load. The page and its files stay out of the OpenAPI
document, like `/docs`: they are for people, not for integrators' clients.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, Request, Response

from shared.errors import NotFound

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",  # the key form is read by the script, never submitted
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"


def plotly_js() -> Path:
    """plotly.js as the `plotly` wheel ships it, found without importing the Python package."""
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package (a dependency of Relais) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


# plotly.js inserts some stylesheets of its own as inline <style> elements when it loads
# (maplibre's, for map charts, which the page does not draw), unless the page already holds
# an element with the id it looks for. The policy would refuse them and report a violation
# on every visit, so the page is served with an element of each such id (from the installed
# plotly.js, whatever its version).
INLINE_STYLE_IDS = re.compile(
    rb'if\(!document\.getElementById\("([\w.-]+)"\)\)\{var \w+=document\.createElement\("style"\)'
)
INLINE_STYLE_MARK = b"<!-- plotly.js inline stylesheets: not inserted -->\n"


def page() -> bytes:
    """The page, with an element for each stylesheet plotly.js would otherwise insert."""
    ids = INLINE_STYLE_IDS.findall(plotly_js().read_bytes())
    guards = b"".join(
        b'<meta name="plotly-inline-style" content="not inserted" id="%s">\n' % id_ for id_ in ids
    )
    return (STATIC / PAGE).read_bytes().replace(INLINE_STYLE_MARK, guards)


def _static(name: str) -> Callable[[], bytes]:
    return lambda: (STATIC / name).read_bytes()


PAGE = "dashboard.html"
# What `/dashboard/assets/{name}` serves: nothing else is reachable under it.
ASSETS: dict[str, tuple[Callable[[], bytes], str]] = {
    "dashboard.js": (_static("dashboard.js"), JS),
    "dashboard.css": (_static("dashboard.css"), CSS),
    "plotly-base.css": (_static("plotly-base.css"), CSS),
    "plotly.min.js": (lambda: plotly_js().read_bytes(), JS),
}
FILES = {PAGE: (page, HTML), **ASSETS}


@dataclass(frozen=True)
class Asset:
    """A file as it is sent: as is and gzipped, each with its own ETag."""

    media_type: str
    body: bytes
    gzipped: bytes
    etag: str
    gzipped_etag: str


_loaded: dict[str, Asset] = {}


def _load(name: str) -> Asset:
    read, media_type = FILES[name]
    body = read()
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Asset(
        media_type=media_type,
        body=body,
        gzipped=gzip.compress(body, mtime=0),
        etag=f'"{digest}"',
        gzipped_etag=f'"{digest}-gzip"',
    )


def takes_gzip(accept_encoding: str) -> bool:
    """The client's `Accept-Encoding` names gzip without refusing it (`q=0`)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in {"gzip", "x-gzip"}:
            weight = params.replace(" ", "").lower()
            return weight not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


async def _serve(request: Request, name: str) -> Response:
    asset = _loaded.get(name)
    if asset is None:  # read and compressed once per process, off the event loop
        asset = _loaded.setdefault(name, await asyncio.to_thread(_load, name))
    gzipped = takes_gzip(request.headers.get("accept-encoding", ""))
    etag = asset.gzipped_etag if gzipped else asset.etag
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": "no-cache",  # revalidated on every load: a new release is seen at once
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    wanted = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(
        asset.gzipped if gzipped else asset.body, media_type=asset.media_type, headers=headers
    )


router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    """The secretariat's page: it asks for an admin key, then shows the figures."""
    return await _serve(request, PAGE)


@router.get("/dashboard/assets/{name}")
async def dashboard_asset(name: str, request: Request) -> Response:
    """The page's script and stylesheets, and plotly.js."""
    if name not in ASSETS:
        raise NotFound(f"The dashboard has no file {name!r}.")
    return await _serve(request, name)
