"""Parsing and validating the reference CSV files, without a database."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.reference import (
    AREAS_SEED,
    SEED_DIR,
    SERVICE_TYPES_SEED,
    Area,
    ReferenceDataError,
    RowError,
    area_depth,
    parse_areas,
    parse_service_types,
)

AREA_HEADER = "code,name,level,parent_code,code_list_version\n"
TYPE_HEADER = "code,name,dimension,description\n"


def areas_csv(*rows: str, header: str = AREA_HEADER) -> bytes:
    return (header + "\n".join(rows) + "\n").encode()


def types_csv(*rows: str) -> bytes:
    return (TYPE_HEADER + "\n".join(rows) + "\n").encode()


def problems(data: bytes, **kwargs) -> list[RowError]:
    with pytest.raises(ReferenceDataError) as caught:
        parse_areas(data, **kwargs)
    return caught.value.errors


def type_problems(data: bytes) -> list[RowError]:
    with pytest.raises(ReferenceDataError) as caught:
        parse_service_types(data)
    return caught.value.errors


def where(errors: list[RowError]) -> set[tuple[int, str, str]]:
    return {(e.line, e.column, e.type) for e in errors}


def known_area(code: str, parent: str | None, level: str, depth: int, path: tuple) -> Area:
    return Area(code, code.title(), level, parent, "v1", depth, path)


KNOWN = [
    known_area("ML", None, "country", 0, ("ML",)),
    known_area("ML-1", "ML", "region", 1, ("ML", "ML-1")),
    known_area("ML-1-01", "ML-1", "cercle", 2, ("ML", "ML-1", "ML-1-01")),
]


# --- the project's seed files -------------------------------------------------------------


def test_the_areas_seed_parses_with_depths_by_level_and_paths_from_the_root():
    rows = {a.code: a for a in parse_areas((SEED_DIR / AREAS_SEED).read_bytes()).rows}
    assert len(rows) == 76
    assert rows["ML"].depth == 0 and rows["ML"].path == ("ML",) and rows["ML"].parent_code is None
    assert rows["ML-1"].depth == 1 and rows["ML-BKO"].depth == 1
    assert rows["ML-1-05"].depth == 2 and rows["ML-1-05"].path == ("ML", "ML-1", "ML-1-05")
    assert rows["ML-BKO-01"].depth == 3
    assert rows["ML-BKO-01"].path == ("ML", "ML-BKO", "ML-BKO-01")
    assert {a.code_list_version for a in rows.values()} == {"ml-iso3166-2+cercles-2016"}


def test_the_service_types_seed_parses_with_quoted_descriptions():
    rows = {t.code: t for t in parse_service_types((SEED_DIR / SERVICE_TYPES_SEED).read_bytes())}
    assert len(rows) == 24
    assert {t.dimension for t in rows.values()} == {
        "economic",
        "social",
        "psychosocial",
        "immediate",
    }
    assert rows["economic.job_placement"].description.startswith("Placement with an employer: ")


# --- areas: depth and path ----------------------------------------------------------------


def test_depth_follows_the_level_and_otherwise_sits_one_below_the_parent():
    assert [area_depth(level, None) for level in ("country", "region", "district")] == [0, 1, 1]
    assert area_depth("cercle", 0) == 2 and area_depth("commune", 1) == 3
    assert area_depth("quartier", 3) == 4
    assert area_depth("zone", None) == 0


def test_other_levels_take_the_parents_depth_plus_one_and_roots_zero():
    parsed = parse_areas(
        areas_csv(
            "SN,Sénégal,nation,,v",
            "SN-DK,Dakar,province,SN,v",
            "SN-DK-Q1,Quartier 1,quartier,SN-DK,v",
        )
    )
    depths = {a.code: (a.depth, a.path) for a in parsed.rows}
    assert depths == {
        "SN": (0, ("SN",)),
        "SN-DK": (1, ("SN", "SN-DK")),
        "SN-DK-Q1": (2, ("SN", "SN-DK", "SN-DK-Q1")),
    }


def test_children_may_come_before_their_parents_in_the_file():
    parsed = parse_areas(
        areas_csv(
            "ML-BKO-01,Commune I,commune,ML-BKO,v",
            "ML-BKO,Bamako,district,ML,v",
            "ML,Mali,country,,v",
        )
    )
    assert {a.code: a.path for a in parsed.rows}["ML-BKO-01"] == ("ML", "ML-BKO", "ML-BKO-01")


def test_a_parent_already_known_is_accepted_and_gives_depth_and_path():
    parsed = parse_areas(
        areas_csv("ML-1-01-A,Secteur A,secteur,ML-1-01,v", "ML-1-01-B,Commune B,commune,ML-1-01,v"),
        known=KNOWN,
    )
    rows = {a.code: a for a in parsed.rows}
    assert rows["ML-1-01-A"].depth == 3
    assert rows["ML-1-01-A"].path == ("ML", "ML-1", "ML-1-01", "ML-1-01-A")
    assert rows["ML-1-01-B"].depth == 3
    assert parsed.rederived == []


def test_moving_a_known_area_rederives_its_known_descendants():
    parsed = parse_areas(
        areas_csv("ML-2,Koulikoro,region,ML,v", "ML-1,Kayes,region,ML-2,v"), known=KNOWN
    )
    rows = {a.code: a for a in parsed.rows}
    assert rows["ML-1"].path == ("ML", "ML-2", "ML-1")
    assert [(a.code, a.depth, a.path) for a in parsed.rederived] == [
        ("ML-1-01", 2, ("ML", "ML-2", "ML-1", "ML-1-01"))
    ]


def test_code_list_version_given_apart_is_set_on_every_row_and_the_column_may_be_absent():
    data = areas_csv(
        "ML,Mali,country,", "ML-1,Kayes,region,ML", header="code,name,level,parent_code\n"
    )
    parsed = parse_areas(data, code_list_version="v2")
    assert {a.code_list_version for a in parsed.rows} == {"v2"}
    overriding = parse_areas(areas_csv("ML,Mali,country,,old"), code_list_version="v3")
    assert overriding.rows[0].code_list_version == "v3"


def test_bom_crlf_spaces_and_level_case_are_tolerated():
    data = "\ufeffcode, name ,level,parent_code,code_list_version\r\nML , Mali ,Country,,v\r\n"
    [area] = parse_areas(data.encode()).rows
    assert (area.code, area.name, area.level, area.depth) == ("ML", "Mali", "country", 0)


def test_blank_lines_are_skipped_and_line_numbers_count_them():
    errors = problems(areas_csv("ML,Mali,country,,v", "", "ML-1,,region,ML,v"))
    assert where(errors) == {(4, "name", "missing")}


def test_a_quoted_value_spanning_lines_keeps_the_next_rows_line_numbers_right():
    errors = problems(areas_csv('ML,"Mali\nRépublique",country,,v', "ML-1,Kayes,region,,"))
    assert where(errors) == {(4, "code_list_version", "missing")}


# --- areas: every problem, with its line ------------------------------------------------


def test_every_bad_row_is_reported_at_once_with_its_line_and_column():
    errors = problems(
        areas_csv(
            "ML,Mali,country,,v",  # line 2: fine
            ",Sans code,region,ML,v",  # 3
            "ML-1,,region,ML,v",  # 4
            "ML-2,Koulikoro,,ML,",  # 5
            "ML,Mali encore,country,,v",  # 6
            "ML-3,Sikasso,region,ML-99,v",  # 7
        )
    )
    assert where(errors) == {
        (3, "code", "missing"),
        (4, "name", "missing"),
        (5, "level", "missing"),
        (5, "code_list_version", "missing"),
        (6, "code", "duplicate"),
        (7, "parent_code", "unknown_parent"),
    }
    duplicate = next(e for e in errors if e.type == "duplicate")
    assert "line 2" in duplicate.message
    assert [e.line for e in errors] == sorted(e.line for e in errors)


def test_the_error_message_names_the_lines():
    with pytest.raises(ReferenceDataError) as caught:
        parse_areas(areas_csv("A,a,country,,v", "B,,x,A,v", "C,c,x,Z,v"))
    assert caught.value.lines == [3, 4]
    assert "lines 3, 4" in str(caught.value)


def test_cycles_are_reported_on_every_row_of_the_cycle():
    errors = problems(
        areas_csv(
            "A,a,x,B,v",
            "B,b,x,C,v",
            "C,c,x,A,v",
            "D,d,x,D,v",
            "E,e,x,A,v",  # below a cycle: not itself at fault
        )
    )
    assert where(errors) == {
        (2, "parent_code", "cycle"),
        (3, "parent_code", "cycle"),
        (4, "parent_code", "cycle"),
        (5, "parent_code", "cycle"),
    }
    assert next(e for e in errors if e.line == 2).message == "cycle: A -> B -> C -> A"
    assert next(e for e in errors if e.line == 5).message == "cycle: D -> D"


def test_a_cycle_through_known_areas_is_refused():
    errors = problems(areas_csv("ML,Mali,country,ML-1-01,v"), known=KNOWN)
    assert where(errors) == {(2, "parent_code", "cycle")}


def test_descendants_of_an_unknown_parent_are_not_blamed_twice():
    errors = problems(areas_csv("A,a,region,NOPE,v", "B,b,cercle,A,v"))
    assert where(errors) == {(2, "parent_code", "unknown_parent")}


def test_over_long_values_are_refused():
    code33 = "A" * 33
    errors = problems(
        areas_csv(
            f"{code33},Trop long,country,,v",
            f"B,{'n' * 201},country,,v",
            f"C,c,{'l' * 33},,v",
            f"D,d,country,,{'v' * 101}",
            f"E,e,region,{code33},v",
            f"{'F' * 32},{'n' * 200},country,,v",  # at the limits: fine
        )
    )
    assert where(errors) == {
        (2, "code", "too_long"),
        (3, "name", "too_long"),
        (4, "level", "too_long"),
        (5, "code_list_version", "too_long"),
        (6, "parent_code", "too_long"),
    }


def test_codes_must_be_usable_in_a_url():
    errors = problems(areas_csv("ML/1,Kayes,region,,v", "ML 2,Koulikoro,region,,v"))
    assert where(errors) == {(2, "code", "invalid_code"), (3, "code", "invalid_code")}


def test_bad_utf8_is_reported_with_its_line():
    data = AREA_HEADER.encode() + b"ML,Mali,country,,v\nML-1,S\xe9gou,region,ML,v\n"
    errors = problems(data)
    assert where(errors) == {(3, "", "encoding")}
    assert "UTF-8" in errors[0].message


def test_a_missing_header_column_is_reported_on_line_one():
    errors = problems(areas_csv("ML,Mali,,v", header="code,name,parent_code,code_list_version\n"))
    assert where(errors) == {(1, "level", "missing_column")}
    errors = problems(areas_csv("ML,Mali,country,", header="code,name,level,parent_code\n"))
    assert where(errors) == {(1, "code_list_version", "missing_column")}
    errors = problems(areas_csv("ML,Mali,country,v", header="code,name,level,code_list_version\n"))
    assert where(errors) == {(1, "parent_code", "missing_column")}


def test_an_empty_file_is_refused():
    assert where(problems(b"")) == {(1, "", "header")}


def test_a_row_with_too_many_fields_is_refused():
    errors = problems(areas_csv("ML,Mali,country,,v,extra"))
    assert where(errors) == {(2, "", "too_many_fields")}


def test_unknown_extra_columns_are_ignored():
    data = areas_csv("ML,Mali,country,,v,note", header=AREA_HEADER.strip() + ",comment\n")
    assert [a.code for a in parse_areas(data).rows] == ["ML"]


# --- service types ----------------------------------------------------------------------


def test_service_types_parse_with_an_optional_description():
    rows = parse_service_types(
        types_csv("social.x,Something,social,", "economic.y,Other,Economic,Why")
    )
    assert [(t.code, t.dimension, t.description) for t in rows] == [
        ("social.x", "social", ""),
        ("economic.y", "economic", "Why"),
    ]


def test_service_type_problems_are_reported_by_line():
    errors = type_problems(
        types_csv(
            "social.x,Something,social,",
            "social.x,Again,social,",
            "social.y,Y,spiritual,",
            f"{'s' * 65},Too long,social,",
            f"social.z,{'n' * 201},social,",
            ",No code,social,",
            "social.w,,,",
            f"{'s' * 64},At the limit,social,",
        )
    )
    assert where(errors) == {
        (3, "code", "duplicate"),
        (4, "dimension", "unknown_dimension"),
        (5, "code", "too_long"),
        (6, "name", "too_long"),
        (7, "code", "missing"),
        (8, "name", "missing"),
        (8, "dimension", "missing"),
    }


def test_service_types_with_a_missing_column_or_bad_utf8_are_refused():
    assert where(type_problems(b"code,name,description\nx,y,z\n")) == {
        (1, "dimension", "missing_column")
    }
    assert where(type_problems(b"code,name,dimension\nx,y,social\n")) == {
        (1, "description", "missing_column")
    }
    data = TYPE_HEADER.encode() + b"social.x,Caf\xe9,social,\n"
    assert (2, "", "encoding") in where(type_problems(data))


# --- property: any forest, in any order -------------------------------------------------


@st.composite
def forests(draw):
    size = draw(st.integers(min_value=1, max_value=40))
    levels = ["country", "region", "district", "cercle", "commune", "quartier", "zone"]
    parents: list[int | None] = []
    for i in range(size):
        parents.append(draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None)
    chosen = [draw(st.sampled_from(levels)) for _ in range(size)]
    seed = draw(st.integers(0, 2**32))
    return parents, chosen, seed


@settings(max_examples=100, deadline=None)
@given(forests())
def test_any_forest_in_any_order_gets_consistent_depths_and_paths(forest):
    parents, levels, seed = forest
    lines = [
        f"N{i},Area {i},{levels[i]},{'' if p is None else f'N{p}'},v" for i, p in enumerate(parents)
    ]
    random.Random(seed).shuffle(lines)
    rows = {a.code: a for a in parse_areas(areas_csv(*lines)).rows}
    assert len(rows) == len(parents)
    for area in rows.values():
        assert area.path[-1] == area.code
        if area.parent_code is None:
            assert area.path == (area.code,)
            assert area.depth == area_depth(area.level, None)
        else:
            parent = rows[area.parent_code]
            assert area.path == (*parent.path, area.code)
            assert area.depth == area_depth(area.level, parent.depth)
