"""Unit and property tests of duplicate matching (pure: no database)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.matching import (
    MAX_BLOCKING_KEYS,
    MAX_CANDIDATES,
    REASONS,
    THRESHOLD,
    BeneficiaryFacts,
    blocking_keys,
    edit_distance,
    normalize_document_number,
    normalize_name,
    phonetic_key,
    region_of,
    score,
)


def make_beneficiary(**fields: Any) -> BeneficiaryFacts:
    """Aminata Traoré, a woman born in 1990 who returned to ML-1-03, unless told otherwise."""
    defaults: dict[str, Any] = {
        "given_name": "Aminata",
        "family_name": "Traoré",
        "sex": "female",
        "birth_year": 1990,
        "area_code": "ML-1-03",
    }
    return BeneficiaryFacts(**{**defaults, **fields})


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Traoré", "Traore"),
        ("Keïta", "Keita"),
        ("Coulibaly", "Koulibaly"),
        ("Touré", "Toure"),
        ("Konaté", "Konate"),
        ("Camara", "Kamara"),
        ("Cissé", "Sissé"),
        ("Dembélé", "Dembele"),
        ("Sangaré", "Sangare"),
        ("Doumbia", "Doumbiya"),
        ("Maïga", "Maiga"),
        ("Diallo", "Jallow"),
        ("Ouattara", "Wattara"),
        ("N'Diaye", "Ndiaye"),
        ("Mamadou", "Mamadu"),
        ("Moussa", "Musa"),
        ("Fatoumata", "Fatimata"),
        ("Oumar", "Umar"),
        ("Omar", "Oumar"),
        ("Ousmane", "Usman"),
        ("Seydou", "Seidou"),
        ("Bakary", "Bakari"),
        ("Mariam", "Maryam"),
        ("Ibrahim", "Ibrahima"),
        ("Brahima", "Ibrahima"),
        ("Youssouf", "Yusuf"),
        ("Souleymane", "Suleiman"),
        ("Cheick", "Cheikh"),
        ("Hawa", "Awa"),
    ],
)
def test_transliteration_variants_share_a_phonetic_key(one, other):
    assert phonetic_key(one) == phonetic_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Traoré", "Diarra"),
        ("Traoré", "Touré"),
        ("Diarra", "Diallo"),
        ("Diarra", "Diawara"),
        ("Koné", "Konaté"),
        ("Cissé", "Sissoko"),
        ("Cissé", "Sy"),
        ("Keïta", "Kanté"),
        ("Coulibaly", "Camara"),
        ("Moussa", "Mamadou"),
        ("Mamadou", "Amadou"),
        ("Mamadou", "Mahamadou"),
        ("Aminata", "Fatoumata"),
        ("Awa", "Adama"),
        ("Oumar", "Ousmane"),
        ("Seydou", "Sekou"),
    ],
)
def test_different_names_keep_different_phonetic_keys(one, other):
    assert phonetic_key(one) != phonetic_key(other)


def test_the_order_of_given_names_does_not_matter_when_asked():
    assert phonetic_key("Aminata Fatoumata", any_order=True) == phonetic_key(
        "Fatimata Aminata", any_order=True
    )
    assert phonetic_key("Aminata Fatoumata") != phonetic_key("Fatoumata Aminata")


def test_normalize_name_folds_case_accents_and_punctuation():
    assert normalize_name("  KEÏTA-Traoré ") == "keita traore"
    assert normalize_name("N\u2019Diaye") == "ndiaye"
    assert normalize_name("Fatoumata  (dite Fanta) 2") == "fatoumata dite fanta"


def test_normalize_document_number_drops_separators():
    assert normalize_document_number(" aa 12-34.56/7 ") == "AA1234567"


# --- facts -------------------------------------------------------------------------------


def test_facts_take_the_birth_year_from_the_date_of_birth():
    facts = make_beneficiary(birth_year=None, date_of_birth=date(1991, 1, 1))
    assert facts.birth_year == 1991


def test_facts_drop_filler_document_numbers():
    facts = make_beneficiary(document_numbers=("N/A", "néant", "000000", "123456", "b-12 345"))
    assert facts.document_numbers == ("B12345",)


def test_facts_place_an_area_in_its_region():
    assert make_beneficiary(area_code="ml-1-03").region_code == "ML-1"
    assert make_beneficiary(area_code="ML-BKO-03").region_code == "ML-BKO"
    assert make_beneficiary(area_code="ML-1-03", region_code="ML-9").region_code == "ML-9"
    assert region_of("ML") is None


def test_an_unrecognised_sex_counts_as_unknown():
    assert make_beneficiary(sex="F").sex == "unknown"
    assert make_beneficiary(sex=" Female ").sex == "female"


# --- scoring -----------------------------------------------------------------------------


def test_the_same_passport_matches_whatever_the_spelling():
    a = make_beneficiary(
        given_name="Fatoumata", family_name="Coulibaly", document_numbers=("AA 123 4567",)
    )
    b = make_beneficiary(
        given_name="Fatimata", family_name="Koulibaly", document_numbers=("aa-1234567",)
    )
    match = score(a, b)
    assert match is not None
    assert match.score >= 0.9
    assert match.reasons[0] == "same_id_document"
    assert "same_name" in match.reasons


def test_a_shared_document_matches_even_when_names_sex_and_year_disagree():
    a = make_beneficiary(document_numbers=("ML0011223",))
    b = make_beneficiary(
        given_name="Moussa",
        family_name="Diarra",
        sex="male",
        birth_year=1970,
        area_code="ML-7-01",
        document_numbers=("ML 001 1223",),
    )
    assert score(a, b) == score(b, a)
    match = score(a, b)
    assert match is not None
    assert match.score == 0.9
    assert match.reasons == ("same_id_document",)


def test_same_names_same_year_and_sex_match():
    match = score(make_beneficiary(family_name="Traoré"), make_beneficiary(family_name="Traore"))
    assert match is not None
    assert match.reasons == ("same_name", "same_birth_year", "same_sex", "same_area")


def test_same_names_of_different_sex_do_not_match():
    assert score(make_beneficiary(sex="female"), make_beneficiary(sex="male")) is None


def test_same_names_born_five_years_apart_do_not_match():
    assert score(make_beneficiary(birth_year=1990), make_beneficiary(birth_year=1995)) is None


def test_same_names_born_a_year_apart_do_not_match_without_a_document():
    assert score(make_beneficiary(birth_year=1990), make_beneficiary(birth_year=1991)) is None


def test_names_alone_never_match_without_a_birth_date_or_year():
    assert score(make_beneficiary(birth_year=None), make_beneficiary(birth_year=None)) is None
    assert score(make_beneficiary(birth_year=None), make_beneficiary()) is None


def test_an_unknown_sex_does_not_rule_a_match_out():
    match = score(make_beneficiary(sex="unknown"), make_beneficiary(sex="female"))
    assert match is not None
    assert "same_sex" not in match.reasons


def test_different_given_names_do_not_match():
    assert (
        score(make_beneficiary(given_name="Mamadou"), make_beneficiary(given_name="Amadou")) is None
    )
    assert score(make_beneficiary(given_name="Awa"), make_beneficiary(given_name="Adama")) is None


def test_the_same_date_of_birth_scores_higher_than_the_same_year():
    born = date(1990, 4, 12)
    same_date = score(make_beneficiary(date_of_birth=born), make_beneficiary(date_of_birth=born))
    same_year = score(make_beneficiary(date_of_birth=born), make_beneficiary(birth_year=1990))
    assert same_date is not None and same_year is not None
    assert "same_date_of_birth" in same_date.reasons
    assert "same_birth_year" in same_year.reasons
    assert same_date.score > same_year.score


def test_the_same_area_scores_higher_than_the_same_region_and_the_region_than_elsewhere():
    here = make_beneficiary(area_code="ML-1-03")
    same_area = score(here, make_beneficiary(area_code="ML-1-03"))
    same_region = score(here, make_beneficiary(area_code="ML-1-04"))
    elsewhere = score(here, make_beneficiary(area_code="ML-BKO-03"))
    assert same_area is not None and same_region is not None and elsewhere is not None
    assert same_area.score > same_region.score > elsewhere.score
    assert "same_area" in same_area.reasons and "same_region" not in same_area.reasons
    assert "same_region" in same_region.reasons
    assert not {"same_area", "same_region"} & set(elsewhere.reasons)


def test_a_typo_makes_a_similar_name_that_scores_below_the_same_name():
    typo = score(make_beneficiary(given_name="Aminata"), make_beneficiary(given_name="Aminta"))
    same = score(make_beneficiary(given_name="Aminata"), make_beneficiary(given_name="Aminata"))
    assert typo is not None and same is not None
    assert "similar_name" in typo.reasons
    assert typo.score < same.score


def test_swapped_family_and_given_names_are_a_similar_name():
    match = score(
        make_beneficiary(given_name="Aminata", family_name="Traoré"),
        make_beneficiary(given_name="Traore", family_name="Aminata"),
    )
    assert match is not None
    assert "similar_name" in match.reasons


def test_a_missing_second_given_name_is_a_similar_name():
    match = score(
        make_beneficiary(given_name="Aminata"), make_beneficiary(given_name="Fatoumata Aminata")
    )
    assert match is not None
    assert "similar_name" in match.reasons


def test_a_similar_name_with_only_the_birth_year_stays_below_the_threshold():
    weak = {"sex": "unknown", "area_code": None}
    assert score(make_beneficiary(**weak), make_beneficiary(given_name="Aminta", **weak)) is None
    corroborated = score(
        make_beneficiary(area_code=None), make_beneficiary(given_name="Aminta", area_code=None)
    )
    assert corroborated is not None
    assert corroborated.score >= THRESHOLD


# --- blocking ----------------------------------------------------------------------------


def test_blocking_keys_of_a_typical_beneficiary():
    facts = make_beneficiary(document_numbers=("AA1234567",))
    assert blocking_keys(facts) == {
        "doc:AA1234567",
        "name:1990:traur",
        "name:1990:aminata",
        "full:1990:aminata|traur",
    }


def test_without_a_birth_year_only_documents_are_keys():
    facts = make_beneficiary(birth_year=None, document_numbers=("AA1234567",))
    assert blocking_keys(facts) == {"doc:AA1234567"}


def test_many_documents_still_make_at_most_six_keys():
    numbers = tuple(f"AB{n}0000{n}" for n in range(1, 8))
    assert len(blocking_keys(make_beneficiary(document_numbers=numbers))) == MAX_BLOCKING_KEYS


def test_the_candidate_cap_is_fifty_per_key():
    assert MAX_CANDIDATES == 50


# --- properties --------------------------------------------------------------------------

FAMILY_NAMES = [
    "Traoré", "Traore", "Touré", "Diarra", "Jarra", "Coulibaly", "Koulibaly", "Cissé",
    "Sissé", "Keïta", "Kanté", "Camara", "Doumbiya", "Maïga", "Diallo",
]  # fmt: skip
GIVEN_NAMES = [
    "Aminata", "Aminta", "Fatoumata", "Fatimata", "Mamadou", "Mamadu", "Amadou", "Moussa",
    "Musa", "Awa", "Hawa", "Oumar", "Omar", "Ibrahim", "Brahima", "Mariam", "Maryam",
]  # fmt: skip
LETTERS = "aàâäbcçdeéèëfghiïjklmnoôöpqrstuùüvwxyz -'\u2019ÉAKTZ"


def names(pool: list[str]) -> st.SearchStrategy[str]:
    pooled = st.lists(st.sampled_from(pool), min_size=1, max_size=2).map(" ".join)
    return st.one_of(pooled, pooled, pooled, st.text(alphabet=LETTERS, max_size=14))


@st.composite
def beneficiary_fields(draw: st.DrawFn) -> dict[str, Any]:
    born = draw(st.one_of(st.none(), st.dates(date(1989, 1, 1), date(1991, 12, 31))))
    return {
        "given_name": draw(names(GIVEN_NAMES)),
        "family_name": draw(names(FAMILY_NAMES)),
        "sex": draw(st.sampled_from(["female", "male", "other", "unknown"])),
        "date_of_birth": born if draw(st.booleans()) else None,
        "birth_year": draw(st.one_of(st.none(), st.integers(1985, 1995))),
        "document_numbers": tuple(
            draw(
                st.lists(
                    st.sampled_from(["AA1234567", "aa 123-4567", "ML0011223", "B98765", "N/A"]),
                    max_size=3,
                )
            )
        ),
        "area_code": draw(st.sampled_from([None, "ML-1-03", "ML-1-04", "ML-1", "ML-BKO-03"])),
    }


beneficiaries = beneficiary_fields().map(lambda fields: BeneficiaryFacts(**fields))

# One person's name as different people write it, a few typos included (Taroré, Koulibay).
FAMILY_SPELLINGS = [
    ["Traoré", "Traore", "TRAORE", "Taroré"],
    ["Coulibaly", "Koulibaly", "Kulibali", "Koulibay"],
    ["Cissé", "Sissé", "Cisse"],
    ["Diarra", "Jarra", "Diara"],
    ["Doumbia", "Doumbiya"],
    ["Keïta", "Keita", "Kéita"],
    ["Touré"],
    ["Kanté"],
]
GIVEN_SPELLINGS = [
    ["Aminata", "Aminta", "Aminata Fatoumata"],
    ["Fatoumata", "Fatimata", "Fatumata", "Fatoumata Binta"],
    ["Mamadou", "Mamadu", "Mamadou Lamine"],
    ["Moussa", "Musa"],
    ["Awa", "Hawa"],
    ["Oumar", "Omar", "Umar"],
    ["Ibrahim", "Brahima", "Ibrahima"],
    ["Amadou"],
]


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[BeneficiaryFacts, BeneficiaryFacts]:
    """Two records of one person, or of namesakes: respelt, swapped, and often matching."""
    family = draw(st.sampled_from(FAMILY_SPELLINGS))
    given_names = draw(st.sampled_from(GIVEN_SPELLINGS))
    sex = draw(st.sampled_from(["female", "male", "other"]))
    born = draw(st.dates(date(1989, 1, 1), date(1991, 12, 31)))

    def record() -> BeneficiaryFacts:
        family_name = draw(st.sampled_from(family))
        given_name = draw(st.sampled_from(given_names))
        if draw(st.integers(0, 9)) == 0:
            family_name, given_name = given_name, family_name
        return BeneficiaryFacts(
            given_name=given_name,
            family_name=family_name,
            sex=draw(st.sampled_from([sex, sex, "unknown"])),
            date_of_birth=draw(st.sampled_from([born, None])),
            birth_year=born.year + draw(st.sampled_from([0, 0, 0, 1, -6])),
            document_numbers=tuple(draw(st.lists(st.sampled_from(["AA1234567"]), max_size=1))),
            area_code=draw(st.sampled_from([None, "ML-1-03", "ML-1-04", "ML-BKO-03"])),
        )

    return record(), record()


pairs = st.one_of(st.tuples(beneficiaries, beneficiaries), related_pairs())


@given(pairs)
def test_score_is_symmetric(pair):
    a, b = pair
    assert score(a, b) == score(b, a)


@given(pairs)
def test_a_match_scores_within_bounds_with_reasons_from_the_vocabulary(pair):
    a, b = pair
    match = score(a, b)
    if match is None:
        return
    assert THRESHOLD <= match.score <= 1.0
    assert set(match.reasons) <= set(REASONS)
    assert list(match.reasons) == sorted(set(match.reasons), key=REASONS.index)
    assert ("same_id_document" in match.reasons) == (match.score >= 0.9)
    assert bool({"same_name", "similar_name"} & set(match.reasons)) or (
        "same_id_document" in match.reasons
    )


@given(beneficiary_fields(), beneficiary_fields())
def test_score_is_deterministic(fields_a, fields_b):
    first = score(BeneficiaryFacts(**fields_a), BeneficiaryFacts(**fields_b))
    again = score(BeneficiaryFacts(**fields_a), BeneficiaryFacts(**fields_b))
    assert first == again


@given(beneficiaries)
def test_a_beneficiary_matches_itself_when_its_birth_year_or_a_document_is_known(a):
    if a.birth_year is None and not a.document_numbers:
        return
    if not a.document_numbers and not (a.family_key and a.given_key):
        return
    assert score(a, a) is not None


@given(st.text())
def test_normalize_name_is_idempotent(s):
    assert normalize_name(normalize_name(s)) == normalize_name(s)


@given(st.text())
def test_phonetic_key_depends_only_on_the_normalized_name(s):
    assert phonetic_key(s) == phonetic_key(normalize_name(s))


@given(st.text())
def test_normalize_document_number_is_idempotent(s):
    once = normalize_document_number(s)
    assert normalize_document_number(once) == once


def reference_distance(a: str, b: str) -> int:
    """Optimal string alignment distance, unbounded and plain."""
    d = [
        [max(i, j) if i == 0 or j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)
    ]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


@given(st.text("abcd", max_size=8), st.text("abcd", max_size=8), st.integers(0, 4))
def test_edit_distance_is_the_plain_distance_capped_at_bound_plus_one(a, b, bound):
    expected = min(reference_distance(a, b), bound + 1)
    assert edit_distance(a, b, bound=bound) == expected
    assert edit_distance(b, a, bound=bound) == expected


@given(beneficiaries)
def test_a_beneficiary_has_at_most_six_blocking_keys(a):
    assert len(blocking_keys(a)) <= MAX_BLOCKING_KEYS


@given(pairs)
def test_a_shared_document_is_a_shared_blocking_key(pair):
    a, b = pair
    shared = set(a.document_numbers) & set(b.document_numbers)
    # Up to three documents each (as drawn here), every document is a key.
    assert {f"doc:{n}" for n in shared} <= blocking_keys(a) & blocking_keys(b)


@given(pairs)
def test_blocking_finds_every_name_match_that_agrees_on_one_phonetic_name(pair):
    a, b = pair
    """The property blocking guarantees, for a pair that `score` matches without a document:

    - equal phonetic family names: both hold "name:<year>:<family key>";
    - one phonetic name of a (family or given) equal to one of b's: they share a "name:" key;
    - "same_name" (both names equal phonetically): they share the narrow "full:" key.

    A match whose family and given names both differ (two typos) may share no key.
    """
    match = score(a, b)
    if match is None or "same_id_document" in match.reasons:
        return
    shared = blocking_keys(a) & blocking_keys(b)
    if a.family_key == b.family_key:
        assert f"name:{a.birth_year}:{a.family_key}" in shared
    if ({a.family_key, a.given_key} & {b.family_key, b.given_key}) - {""}:
        assert any(key.startswith("name:") for key in shared)
    if "same_name" in match.reasons:
        assert any(key.startswith("full:") for key in shared)


@given(pairs)
def test_a_name_match_needs_a_known_birth_year_on_both_sides(pair):
    a, b = pair
    match = score(a, b)
    if match is not None and "same_id_document" not in match.reasons:
        assert a.birth_year == b.birth_year is not None
