"""Keyset pagination: every row once, stable while rows are inserted between pages."""

from __future__ import annotations

from services.registry.app import create_app
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_partner


async def test_pages_cover_every_row_once_even_with_inserts_between_pages(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        names = [f"Partner {i:02d}" for i in range(0, 23, 2)]
        for name in names:
            await make_partner(client, admin, name)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            url = "/partners?limit=5" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(url, headers=bearer(admin))).json()
            seen += [p["name"] for p in page["items"]]
            pages += 1
            if pages == 1:
                # Inserted before the cursor's position: must not shift later pages.
                await make_partner(client, admin, "Partner 01")
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(seen)
        assert set(names) <= set(seen) and len(seen) == len(set(seen))
        assert "Partner 01" not in seen
        assert pages == 3
