"""Which case an event is about: its own `cases/{id}` subject, or the `case_id` its data
names (referral events, `case.pathway_completed`). `ix_events_case` indexes this expression
(migration 0010), so an erasure or a subject-access export reads a case's events without
scanning the log; a query must use the expression exactly as written here to use the index."""

from __future__ import annotations

CASE_OF_EVENT = "COALESCE(data ->> 'case_id', substring(subject, '^cases/(.+)$'))"
