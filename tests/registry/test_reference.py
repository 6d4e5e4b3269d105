"""Areas and service types over HTTP and in PostgreSQL: seeds, listing, import, creation."""

from __future__ import annotations

from sqlalchemy import func, literal_column, select, update

from services.registry import reference
from services.registry.app import create_app
from shared.db import Statement
from shared.tables import areas, service_types
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_partner, make_partner_key

SEED_VERSION = "ml-iso3166-2+cercles-2016"


async def count(db, table) -> int:
    async with db.connection() as conn:
        return await Statement(select(func.count()).select_from(table)).fetchval(conn)


async def row_version(db, code: str) -> str:
    """The row's xmin: it changes whenever the row is rewritten."""
    async with db.connection() as conn:
        query = select(literal_column("xmin::text")).select_from(areas).where(areas.c.code == code)
        return await Statement(query).fetchval(conn)


async def all_pages(client, url: str, key: str, *, limit: int = 500) -> list[dict]:
    items: list[dict] = []
    cursor = None
    separator = "&" if "?" in url else "?"
    while True:
        page_url = f"{url}{separator}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(page_url, headers=bearer(key))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def partner_key(client, admin: str) -> str:
    partner = await make_partner(client, admin)
    return (await make_partner_key(client, admin, partner["id"]))["key"]


def upload(csv_text: str | bytes, version: str = "ml-2027") -> dict:
    data = csv_text.encode() if isinstance(csv_text, str) else csv_text
    return {
        "files": {"file": ("areas.csv", data, "text/csv")},
        "data": {"code_list_version": version},
    }


# --- seeds ------------------------------------------------------------------------------


async def test_seeds_are_loaded_at_start_up(settings):
    app = create_app(settings)
    async with running(app) as client:
        db = app.state.db
        assert await count(db, areas) == 76
        assert await count(db, service_types) == 24
        async with db.connection() as conn:
            rows = {
                r["code"]: r
                for r in await Statement(select(areas)).fetch(conn)
                if r["code"] in {"ML", "ML-BKO-01"}
            }
        assert rows["ML"]["depth"] == 0 and rows["ML"]["path"] == ["ML"]
        assert rows["ML-BKO-01"]["depth"] == 3
        assert rows["ML-BKO-01"]["path"] == ["ML", "ML-BKO", "ML-BKO-01"]

        admin = await make_admin_key(app.state.db)
        listed = await all_pages(client, "/areas", admin)
        assert len(listed) == 76
        mali = next(a for a in listed if a["code"] == "ML")
        assert mali == {
            "code": "ML",
            "name": "Mali",
            "level": "country",
            "depth": 0,
            "parent_code": None,
            "code_list_version": SEED_VERSION,
        }
        assert len(await all_pages(client, "/service-types", admin)) == 24


async def test_loading_the_seeds_again_neither_duplicates_nor_keeps_stale_names(settings):
    app = create_app(settings)
    async with running(app):
        db = app.state.db
        async with db.transaction() as conn:
            await Statement(update(areas).where(areas.c.code == "ML-1").values(name="Old")).execute(
                conn
            )
            await Statement(
                update(service_types)
                .where(service_types.c.code == "social.legal")
                .values(name="Old")
            ).execute(conn)
        untouched_before = await row_version(db, "ML-BKO-01")
        async with db.transaction() as conn:
            await reference.load_seed_data(conn)
        assert await row_version(db, "ML-BKO-01") == untouched_before
        assert await count(db, areas) == 76
        assert await count(db, service_types) == 24
        async with db.connection() as conn:
            kayes = await Statement(select(areas.c.name).where(areas.c.code == "ML-1")).fetchval(
                conn
            )
            legal = await Statement(
                select(service_types.c.name).where(service_types.c.code == "social.legal")
            ).fetchval(conn)
        assert (kayes, legal) == ("Kayes", "Legal services")
    # A restart loads them once more.
    app = create_app(settings)
    async with running(app):
        assert await count(app.state.db, areas) == 76
        assert await count(app.state.db, service_types) == 24


# --- listing and reading areas ------------------------------------------------------------


async def test_areas_filter_by_parent_and_level(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        communes = await all_pages(client, "/areas?parent=ML-BKO", admin)
        assert [a["code"] for a in communes] == [f"ML-BKO-0{i}" for i in range(1, 7)]
        assert {a["depth"] for a in communes} == {3}
        below_mali = await all_pages(client, "/areas?parent=ML", admin)
        assert len(below_mali) == 11  # ten regions and the district of Bamako
        regions = await all_pages(client, "/areas?level=region", admin)
        assert len(regions) == 10 and {a["depth"] for a in regions} == {1}
        kayes_cercles = await all_pages(client, "/areas?parent=ML-1&level=cercle", admin)
        assert len(kayes_cercles) == 7
        assert await all_pages(client, "/areas?parent=ML-1&level=commune", admin) == []
        assert await all_pages(client, "/areas?parent=NOWHERE", admin) == []


async def test_areas_are_paginated_by_code_and_every_area_comes_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        whole = [a["code"] for a in await all_pages(client, "/areas", admin)]
        paged = [a["code"] for a in await all_pages(client, "/areas", admin, limit=7)]
        assert paged == whole and len(set(paged)) == 76
        first = (await client.get("/areas?limit=7", headers=bearer(admin))).json()
        assert len(first["items"]) == 7 and first["next_cursor"]
        bad = await client.get("/areas?cursor=not-a-cursor", headers=bearer(admin))
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "query.cursor"
        too_many = await client.get("/areas?limit=501", headers=bearer(admin))
        assert too_many.status_code == 422


async def test_an_area_comes_with_its_ancestors_from_the_root(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        key = await partner_key(client, admin)  # the directory is readable by every key
        response = await client.get("/areas/ML-BKO-01", headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["code"], body["name"], body["depth"]) == ("ML-BKO-01", "Commune I", 3)
        assert body["parent_code"] == "ML-BKO"
        assert body["ancestors"] == [
            {"code": "ML", "name": "Mali", "level": "country"},
            {"code": "ML-BKO", "name": "Bamako", "level": "district"},
        ]
        root = (await client.get("/areas/ML", headers=bearer(key))).json()
        assert root["ancestors"] == []


async def test_an_unknown_area_answers_404(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.get("/areas/ML-99", headers=bearer(admin))
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get("/areas/ML")).status_code == 401


# --- importing areas -----------------------------------------------------------------------


async def test_an_admin_imports_areas_and_they_are_listed(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        csv_text = (
            "code,name,level,parent_code\n"
            "ML-1-05-Q2,Quartier 2,quartier,ML-1-05-01\n"  # its parent comes later in the file
            "ML-1-05-01,Kita,commune,ML-1-05\n"  # its parent is already known
            "ML-1,Kayes (région),region,ML\n"  # an existing area, renamed
        )
        response = await client.post("/areas/import", headers=bearer(admin), **upload(csv_text))
        assert response.status_code == 200, response.text
        assert response.json() == {"imported": 3, "code_list_version": "ml-2027"}
        assert await count(app.state.db, areas) == 78

        listed = await all_pages(client, "/areas?parent=ML-1-05", admin)
        assert [(a["code"], a["depth"], a["code_list_version"]) for a in listed] == [
            ("ML-1-05-01", 3, "ml-2027")
        ]
        quarter = (await client.get("/areas/ML-1-05-Q2", headers=bearer(admin))).json()
        assert quarter["depth"] == 4 and quarter["level"] == "quartier"
        assert [a["code"] for a in quarter["ancestors"]] == ["ML", "ML-1", "ML-1-05", "ML-1-05-01"]
        assert quarter["ancestors"][1]["name"] == "Kayes (région)"

        again = await client.post("/areas/import", headers=bearer(admin), **upload(csv_text))
        assert again.status_code == 200
        assert await count(app.state.db, areas) == 78


async def test_moving_an_area_moves_the_areas_below_it(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        csv_text = "code,name,level,parent_code\nML-BKO,Bamako,district,ML-2\n"
        response = await client.post("/areas/import", headers=bearer(admin), **upload(csv_text))
        assert response.status_code == 200, response.text
        assert response.json()["imported"] == 1
        commune = (await client.get("/areas/ML-BKO-06", headers=bearer(admin))).json()
        assert [a["code"] for a in commune["ancestors"]] == ["ML", "ML-2", "ML-BKO"]
        assert commune["depth"] == 3 and commune["code_list_version"] == SEED_VERSION
        async with app.state.db.connection() as conn:
            path = await Statement(
                select(areas.c.path).where(areas.c.code == "ML-BKO-06")
            ).fetchval(conn)
        assert path == ["ML", "ML-2", "ML-BKO", "ML-BKO-06"]
        cycle = "code,name,level,parent_code\nML-2,Koulikoro,region,ML-BKO-01\n"
        refused = await client.post("/areas/import", headers=bearer(admin), **upload(cycle))
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["type"] == "cycle"


async def test_a_file_with_bad_rows_names_their_lines_and_imports_nothing(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        csv_text = (
            "code,name,level,parent_code,code_list_version\n"
            "ML-1-05-01,Kita,commune,ML-1-05,\n"  # line 2: fine
            "ML-1-05-02,,commune,ML-1-05,\n"  # 3: no name
            "ML-1-05-03,Sébékoro,commune,ML-99,\n"  # 4: unknown parent
            "ML-1-05-01,Kita bis,commune,ML-1-05,\n"  # 5: duplicate
        )
        response = await client.post("/areas/import", headers=bearer(admin), **upload(csv_text))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert [e["field"] for e in body["errors"]] == [
            "file.line[3].name",
            "file.line[4].parent_code",
            "file.line[5].code",
        ]
        assert [e["type"] for e in body["errors"]] == ["missing", "unknown_parent", "duplicate"]
        assert "lines 3, 4, 5" in body["detail"] and "nothing was imported" in body["detail"]
        assert await count(app.state.db, areas) == 76
        assert (await client.get("/areas/ML-1-05-01", headers=bearer(admin))).status_code == 404


async def test_a_file_that_is_not_utf8_or_lacks_a_column_is_refused(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        latin1 = "code,name,level,parent_code\nML-4-99,Ségou II,cercle,ML-4\n".encode("latin-1")
        response = await client.post("/areas/import", headers=bearer(admin), **upload(latin1))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "file.line[2]"
        no_level = "code,name,parent_code\nML-4-99,Ségou II,ML-4\n"
        response = await client.post("/areas/import", headers=bearer(admin), **upload(no_level))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "file.line[1].level"
        assert await count(app.state.db, areas) == 76


async def test_import_requires_the_file_and_the_code_list_version(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        csv_text = "code,name,level,parent_code\nML-4-99,Ségou II,cercle,ML-4\n"
        no_version = await client.post(
            "/areas/import",
            headers=bearer(admin),
            files={"file": ("areas.csv", csv_text.encode(), "text/csv")},
        )
        assert no_version.status_code == 422
        assert "body.code_list_version" in [e["field"] for e in no_version.json()["errors"]]
        no_file = await client.post(
            "/areas/import", headers=bearer(admin), data={"code_list_version": "v"}
        )
        assert no_file.status_code == 422
        assert "body.file" in [e["field"] for e in no_file.json()["errors"]]


async def test_a_partner_key_may_not_import_areas(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        key = await partner_key(client, admin)
        csv_text = "code,name,level,parent_code\nML-4-99,Ségou II,cercle,ML-4\n"
        response = await client.post("/areas/import", headers=bearer(key), **upload(csv_text))
        assert response.status_code == 403
        assert await count(app.state.db, areas) == 76


# --- service types -----------------------------------------------------------------------


NEW_TYPE = {
    "code": "economic.agricultural_inputs",
    "name": "Agricultural inputs",
    "dimension": "economic",
    "description": "Seeds, tools and fertiliser",
}


async def test_service_types_filter_by_dimension(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        key = await partner_key(client, admin)
        psychosocial = await all_pages(client, "/service-types?dimension=psychosocial", key)
        assert [t["code"] for t in psychosocial] == [
            "psychosocial.community_activities",
            "psychosocial.individual_counselling",
            "psychosocial.specialised_mental_health",
        ]
        paged = await all_pages(client, "/service-types", key, limit=5)
        assert len(paged) == 24 and len({t["code"] for t in paged}) == 24
        bad = await client.get("/service-types?dimension=spiritual", headers=bearer(key))
        assert bad.status_code == 422


async def test_an_admin_creates_a_service_type_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        created = await client.post("/service-types", json=NEW_TYPE, headers=bearer(admin))
        assert created.status_code == 201, created.text
        assert created.json() == NEW_TYPE
        economic = await all_pages(client, "/service-types?dimension=economic", admin)
        assert NEW_TYPE in economic
        again = await client.post(
            "/service-types", json={**NEW_TYPE, "name": "Other"}, headers=bearer(admin)
        )
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert await count(app.state.db, service_types) == 25


async def test_a_partner_key_may_not_create_a_service_type(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        key = await partner_key(client, admin)
        response = await client.post("/service-types", json=NEW_TYPE, headers=bearer(key))
        assert response.status_code == 403
        assert await count(app.state.db, service_types) == 24


async def test_an_invalid_service_type_answers_422_naming_the_fields(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        cases = [
            ({**NEW_TYPE, "dimension": "spiritual"}, "body.dimension"),
            ({**NEW_TYPE, "colour": "blue"}, "body.colour"),
            ({**NEW_TYPE, "code": "x" * 65}, "body.code"),
            ({**NEW_TYPE, "code": "has/slash"}, "body.code"),
            ({**NEW_TYPE, "name": ""}, "body.name"),
            ({k: v for k, v in NEW_TYPE.items() if k != "name"}, "body.name"),
        ]
        for body, field in cases:
            response = await client.post("/service-types", json=body, headers=bearer(admin))
            assert response.status_code == 422, body
            assert field in [e["field"] for e in response.json()["errors"]], body
        assert await count(app.state.db, service_types) == 24
