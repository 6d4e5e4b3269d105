"""Which case an event is about: its own `cases/{id}` subject, or the `case_id` its data
names (referral events, `case.pathway_completed`). `ix_events_case` indexes this expression
(migration 0010), so an erasure or a subject-access export reads a case's events without
scanning the log; a query must use the expression exactly as written here to use the index."""

from __future__ import annotations

CASE_OF_EVENT = "COALESCE(data ->> 'case_id', substring(subject, '^cases/(.+)$'))"
# The condition "this event is about the case `:case_id`" (a text parameter), as the index
# can serve it: every query of a case's events says it so.
ABOUT_CASE = f"{CASE_OF_EVENT} = CAST(:case_id AS text)"
