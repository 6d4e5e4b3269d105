"""What every service answers the same way at the HTTP layer (SPEC 7): a body that is not
JSON answers 400, a body in a media type the operation does not take 415, a 405 names every
method of the path, the probes document only what they answer, and /docs needs no internet."""

from __future__ import annotations

import re
import uuid

import pytest

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from shared.settings import Settings
from tests.conftest import running
from tests.factories import bearer, make_admin_key

APPS = {"registry": registry_app, "referrals": referrals_app, "notifications": notifications_app}
METHODS = {"get", "post", "put", "patch", "delete"}
FORMS = {"multipart/form-data", "application/x-www-form-urlencoded"}


def _url(path: str) -> str:
    """The path with each parameter filled in (a UUID reads as any kind of id)."""
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def _operations_with_a_body(app) -> list[tuple[str, str, list[str]]]:
    return [
        (method.upper(), path, list(operation["requestBody"]["content"]))
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    ]


def _assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("name", sorted(APPS))
async def test_a_body_that_is_not_json_answers_400_saying_where_on_every_json_operation(
    name, settings
):
    app = APPS[name](settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Content-Type": "application/json"}
        operations = [op for op in _operations_with_a_body(app) if "application/json" in op[2]]
        assert operations
        for method, path, _types in operations:
            for payload, where in ((b'{"name": ', "line 1, column 10"), (b"hello", "line 1")):
                response = await client.request(
                    method, _url(path), content=payload, headers=headers
                )
                body = _assert_problem(response, 400, "bad-request")
                assert "not valid JSON" in body["detail"] and where in body["detail"], (
                    method,
                    path,
                    body,
                )
                assert body["errors"][0]["field"] == "body"


async def test_the_json_error_names_the_line_and_column_and_quotes_nothing(settings):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.post(
            "/partners",
            content=b'{\n  "name": "Aminata Traore",\n  kind: "ngo"}',
            headers={**bearer(admin), "Content-Type": "application/json"},
        )
        body = _assert_problem(response, 400, "bad-request")
        assert "line 3, column 3" in body["detail"]
        assert "Aminata" not in response.text


async def test_bad_utf8_answers_400_and_valid_json_with_wrong_fields_stays_422(settings):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Content-Type": "application/json"}
        response = await client.post(
            "/partners", content=b'{"name": "\xff\xfe", "kind": "ngo"}', headers=headers
        )
        body = _assert_problem(response, 400, "bad-request")
        assert "UTF-8" in body["detail"]
        wrong = await client.post("/partners", json={"name": 12}, headers=headers)
        _assert_problem(wrong, 422, "validation")


@pytest.mark.parametrize("name", sorted(APPS))
async def test_a_body_in_a_media_type_the_operation_does_not_take_answers_415_naming_those_it_takes(
    name, settings
):
    app = APPS[name](settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        for method, path, types in _operations_with_a_body(app):
            for sent in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
                if sent in types or (sent in FORMS and FORMS & set(types)):
                    continue  # a form is read from either encoding
                response = await client.request(
                    method,
                    _url(path),
                    content=b"name=x" if "form" in sent else b'{"name": "x"}',
                    headers={**bearer(admin), "Content-Type": sent},
                )
                body = _assert_problem(response, 415, "unsupported-media-type")
                assert all(t in body["detail"] for t in types), (method, path, body)
                assert sent in body["detail"]


async def test_a_multipart_form_on_a_json_operation_answers_415(settings):
    app = notifications_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.post(
            "/endpoints",
            files={"url": (None, "https://example.org/hook")},
            headers=bearer(admin),
        )
        body = _assert_problem(response, 415, "unsupported-media-type")
        assert "application/json" in body["detail"] and "multipart/form-data" in body["detail"]
        assert response.headers["accept-post"] == "application/json"


async def test_the_area_import_takes_a_form_and_refuses_json_with_415(settings):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.post(
            "/areas/import", json={"code_list_version": "v1"}, headers=bearer(admin)
        )
        body = _assert_problem(response, 415, "unsupported-media-type")
        assert "multipart/form-data" in body["detail"]
        form = await client.post(
            "/areas/import",
            data={"code_list_version": "v1"},
            files={"file": ("areas.csv", b"code,name,level,parent_code\nZZ,Z,country,\n")},
            headers=bearer(admin),
        )
        assert form.status_code == 200, form.text


async def test_a_json_body_without_content_type_is_read_as_json(settings):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.post(
            "/partners", content=b'{"name": "ONG Sabou", "kind": "ngo"}', headers=bearer(admin)
        )
        assert "content-type" not in response.request.headers
        assert response.status_code == 201, response.text
        assert response.json()["name"] == "ONG Sabou"


@pytest.mark.parametrize("name", sorted(APPS))
async def test_a_405_names_every_method_of_the_path_in_allow(name, settings):
    app = APPS[name](settings)
    async with running(app) as client:
        paths = app.openapi()["paths"]
        for path in paths:
            url = _url(path)
            # Every documented path the URL matches (`/areas/import` is also `/areas/{code}`).
            documented = {
                method.upper()
                for template, item in paths.items()
                if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), url)
                for method in item
                if method in METHODS
            }
            refused = sorted({m.upper() for m in METHODS} - documented)[0]
            response = await client.request(refused, url)
            _assert_problem(response, 405, "method-not-allowed")
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == documented, (path, response.headers["allow"])


async def test_delete_on_the_partner_list_allows_get_and_post(settings):
    async with running(registry_app(settings)) as client:
        response = await client.delete("/partners")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_probes_document_only_what_they_answer(name):
    spec = APPS[name](Settings(database_url="postgresql://unused/none")).openapi()
    paths = spec["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert set(paths["/metrics"]["get"]["responses"]) == {"200"}
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    ready = paths["/readyz"]["get"]["responses"]
    assert set(ready) == {"200", "503"}
    assert ready["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")
    assert list(ready["503"]["content"]) == ["application/problem+json"]
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in paths[probe]["get"] and "parameters" not in paths[probe]["get"]


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_operation_with_a_body_documents_415_and_the_others_keep_401_403_422(name):
    spec = APPS[name](Settings(database_url="postgresql://unused/none")).openapi()
    for path, item in spec["paths"].items():
        if path in {"/healthz", "/readyz", "/metrics"}:
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"401", "403", "422"} <= set(responses), (method, path)
            if "requestBody" in operation:
                assert "415" in responses, (method, path)
                for media in operation["requestBody"]["content"]:
                    assert media in responses["415"]["description"], (method, path)
                assert list(responses["415"]["content"]) == ["application/problem+json"]
            else:
                assert "415" not in responses, (method, path)


async def test_a_post_without_a_body_documents_the_400_of_a_bad_idempotency_key(settings):
    app = notifications_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        path = "/endpoints/{endpoint_id}/enable"
        operation = app.openapi()["paths"][path]["post"]
        assert "requestBody" not in operation
        response = await client.post(
            _url(path), headers={**bearer(admin), "Idempotency-Key": "k" * 256}
        )
        _assert_problem(response, 400, "bad-request")
        assert "Idempotency-Key" in operation["responses"]["400"]["description"]


async def test_metrics_answer_the_documented_content_type(settings):
    app = referrals_app(settings)
    async with running(app) as client:
        documented = app.openapi()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] in documented


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
@pytest.mark.parametrize("name", sorted(APPS))
async def test_the_docs_pages_load_every_asset_from_the_service_itself(name, page, settings):
    app = APPS[name](settings)
    async with running(app) as client:
        response = await client.get(page)
        assert response.status_code == 200
        html = response.text
        references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert references
        inline = "".join(re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL))
        outside = re.findall(r"(?:[a-z][a-z0-9+.-]*:)?//[^\s\"'<>]+", html, flags=re.I)
        assert outside == [], outside
        assert "validatorUrl" not in inline or '"validatorUrl": null' in inline
        kinds = {".js": "javascript", ".css": "text/css", ".png": "image/"}
        for reference in references:
            assert reference.startswith("/") and not reference.startswith("//"), reference
            asset = await client.get(reference)
            assert asset.status_code == 200, reference
            expected = next(kind for ext, kind in kinds.items() if reference.endswith(ext))
            assert expected in asset.headers["content-type"], (reference, asset.headers)
        scripts = [r for r in references if r.endswith(".js")]
        assert scripts, html
        spec_url = re.findall(r"""(?:url:|spec-url=)\s*["']([^"']+)["']""", html)
        assert spec_url == ["/openapi.json"]
        if page == "/docs":
            assert (await client.get(spec_url[0])).json()["components"]["securitySchemes"]
