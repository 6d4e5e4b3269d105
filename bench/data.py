"""The cases the bench posts: the 3-step plan of the tests' `case_body`, each with a
beneficiary no other resembles (the idea of tests/registry/helpers.py `distinct_person`,
with enough syllables that names stay distinct over millions of cases), so that duplicate
detection does its normal amount of work: every blocking key is looked up, few match."""

from __future__ import annotations

from typing import Any

# Consonant-led syllables whose phonetic keys stay apart (see services/registry/matching.py).
SYLLABLES = (
    "ba", "di", "ko", "sa", "ma", "tu", "ne", "fo", "ga", "li",
    "ro", "ze", "ka", "mi", "nu", "se", "bu", "ta", "pi", "la",
)  # fmt: skip

AREAS = ("ML-BKO-03", "ML-BKO-01", "ML-BKO-05", "ML-BKO-02")

PLAN = [
    {
        "service_type": "psychosocial.individual_counselling",
        "priority": "urgent",
        "depends_on": [],
        "notes": "Owner's note: prefers a woman counsellor",
    },
    {"service_type": "economic.vocational_training", "depends_on": []},
    {"service_type": "economic.microbusiness", "depends_on": ["1", "2"]},
]
PLAN_TYPES = tuple(step["service_type"] for step in PLAN)


def _word(n: int, salt: int) -> str:
    n = n * 7 + salt
    letters = []
    for _ in range(6):
        letters.append(SYLLABLES[n % len(SYLLABLES)])
        n //= len(SYLLABLES)
    return "".join(letters).capitalize()


def person(i: int) -> dict[str, Any]:
    return {
        "given_name": _word(i, 3),
        "family_name": _word(i, 11),
        "sex": "female" if i % 2 else "male",
        "birth_year": 1960 + i % 40,
        "nationality": "ML",
        "phone": f"+2237{i % 10_000_000:07d}",
        "languages": ["bm", "fr"],
        "id_documents": [{"type": "national_id", "number": f"NI{i:010d}"}],
        "household_size": 1 + i % 7,
    }


def case_body(i: int) -> dict[str, Any]:
    return {
        "external_id": f"BENCH-{i}",
        "beneficiary": person(i),
        "return": {"date": "2026-10-02", "country_from": "LY", "area_code": AREAS[i % len(AREAS)]},
        "vulnerabilities": ["psychosocial_distress", "single_parent"],
        "consent": {"referral": "granted", "given_at": "2026-10-03T09:00:00Z", "method": "written"},
        "plan": PLAN,
    }
