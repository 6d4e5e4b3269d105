"""The one exception to the log's immutability: erasing a case (SPEC 9) rewrites the `data` of
every event about it, in the caller's transaction, with `shared.erasure`'s erased form.

Events are otherwise never changed. Everything else of an erased case's events stays as it
was appended: ids, `seq`, `tx`, type, subject, time, actor, audience. Consumers that read an
event again after the erasure (a replay, a rebuild, a webhook still pending, the feed) get
the erased data; nothing tells them apart. The events are found through `ix_events_case`
(`about_case.ABOUT_CASE`, the indexed expression), locked, and only those whose data
changes are written back, in one statement.
"""

from __future__ import annotations

from uuid import UUID

from shared.db import Connection, Statement, json_text
from shared.erasure import erase_event_data
from shared.eventlog.about_case import ABOUT_CASE

_ABOUT_CASE = Statement(
    f"SELECT seq, type, data FROM hub.events WHERE {ABOUT_CASE} ORDER BY seq FOR UPDATE"  # noqa: S608 - a constant expression
)
_REWRITE = Statement(
    "UPDATE hub.events AS e SET data = CAST(r.data AS jsonb) "
    "FROM unnest(CAST(:seqs AS bigint[]), CAST(:datas AS text[])) AS r(seq, data) "
    "WHERE e.seq = r.seq"
)


async def erase_events_about(conn: Connection, *, case_id: UUID) -> int:
    """Rewrite the data of every event about the case in its erased form; how many changed."""
    seqs: list[int] = []
    datas: list[str] = []
    for row in await _ABOUT_CASE.fetch(conn, case_id=str(case_id)):
        erased = erase_event_data(row["type"], row["data"])  # jsonb decoded by the pool's codec
        if erased != row["data"]:
            seqs.append(row["seq"])
            datas.append(json_text(erased))
    if seqs:
        await _REWRITE.execute(conn, seqs=seqs, datas=datas)
    return len(seqs)
