"""Every error is an RFC 9457 problem document; bad input changes nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from services.registry.app import create_app
from shared.db import Statement
from shared.tables import events
from tests.conftest import running
from tests.factories import bearer, make_admin_key

_EVENT_COUNT = Statement(select(func.count()).select_from(events))


async def _event_count(app) -> int:
    async with app.state.db.connection() as conn:
        return await _EVENT_COUNT.fetchval(conn)


async def test_validation_errors_name_each_field_and_write_nothing(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        before = await _event_count(app)
        response = await client.post(
            "/partners",
            json={"name": "", "kind": "church", "contact_phone": "12", "colour": "red"},
            headers=bearer(admin),
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        fields = {e["field"] for e in body["errors"]}
        assert fields == {"body.name", "body.kind", "body.contact_phone", "body.colour"}
        assert body["type"].endswith("/validation") and body["title"]
        assert await _event_count(app) == before
        listed = await client.get("/partners", headers=bearer(admin))
        assert listed.json()["items"] == []


async def test_malformed_json_and_bad_utf8_answer_4xx_problems(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Content-Type": "application/json"}
        for payload in (b"{not json", b'{"name": "\xff\xfe", "kind": "ngo"}'):
            response = await client.post("/partners", content=payload, headers=headers)
            assert response.status_code in (400, 422), response.text
            assert response.headers["content-type"] == "application/problem+json"


async def test_an_oversized_body_answers_413_before_the_handler(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        big = b'{"name": "' + b"a" * (settings.max_body_bytes + 10) + b'", "kind": "ngo"}'
        response = await client.post(
            "/partners", content=big, headers={**bearer(admin), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["type"].endswith("/payload-too-large")


async def test_an_unexpected_error_answers_500_with_the_request_id_and_no_trace(settings, capsys):
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("secret detail: Aminata Traore +22370000000")

    app.add_api_route("/boom", boom)
    async with running(app) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "req-500"
    assert body["type"].endswith("/internal")
    assert "Traceback" not in response.text and "secret" not in response.text
    logged = capsys.readouterr().out
    assert "req-500" in logged and "unhandled_error" in logged
    assert "Aminata" not in logged and "+22370000000" not in logged


async def test_bad_cursors_and_page_sizes_answer_422(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        for query in ("cursor=%%%", "cursor=WzFd", "limit=0", "limit=501", "limit=abc"):
            response = await client.get(f"/partners?{query}", headers=bearer(admin))
            assert response.status_code == 422, (query, response.text)
            assert response.headers["content-type"] == "application/problem+json"
