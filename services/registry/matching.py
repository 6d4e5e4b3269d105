"""Probable duplicate beneficiaries: name keys, blocking and scoring (pure, no I/O).

SPEC 4 "Duplicate": two cases probably describe one person when they share an identity
document number, or when their names are close and they share the birth date or year and
the sex. Matching never compares all cases: the caller stores `blocking_keys` of every case
in an indexed table of (case_id, key), fetches the candidates sharing a key with the new
case (`WHERE key = ANY(:keys)`, at most `MAX_CANDIDATES` per key) and calls `score` on each.

Malian names are few and very common, and one name is written many ways (Coulibaly,
Koulibaly, Kulibali). `phonetic_key` folds those spellings together; an edit distance on the
names catches the typos left over.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

__all__ = [
    "MAX_BLOCKING_KEYS",
    "MAX_CANDIDATES",
    "MAX_DOCUMENT_KEYS",
    "REASONS",
    "THRESHOLD",
    "BeneficiaryFacts",
    "Match",
    "blocking_keys",
    "edit_distance",
    "facts_of",
    "normalize_document_number",
    "normalize_name",
    "phonetic_key",
    "region_of",
    "score",
]

#: The most candidates the caller fetches for one blocking key (say the most recent ones).
#: With at most `MAX_BLOCKING_KEYS` keys a new case is scored against at most 300 others,
#: however common its names. Only the broad blocks (all the Traorés born in 1990) ever reach
#: the cap; the "full:" block that holds the usual duplicates stays far below it.
MAX_CANDIDATES = 50

#: The most blocking keys of one beneficiary: up to `MAX_DOCUMENT_KEYS` documents and three
#: name keys.
MAX_BLOCKING_KEYS = 6

#: Documents beyond this many (in sorted order) get no blocking key; `score` still compares them.
MAX_DOCUMENT_KEYS = 3

#: The lowest score reported as a probable duplicate. The rules below decide what may match
#: at all; the threshold then drops the one weak combination that satisfies them: a name that
#: is only *similar* (a typo, swapped fields) with only the birth year, an unknown sex and no
#: common place (0.35 + 0.1 = 0.45). A same name with the same birth year scores 0.6; a shared
#: document scores at least 0.9.
THRESHOLD = 0.5

#: The reasons `score` may give, in the order it gives them.
REASONS = (
    "same_id_document",
    "same_name",
    "similar_name",
    "same_date_of_birth",
    "same_birth_year",
    "same_sex",
    "same_area",
    "same_region",
)

# What each agreement adds to a match on names. The best possible total, 0.85, stays below
# the 0.9 of a shared document: names and dates alone never look as sure as a passport.
_WEIGHTS = {
    "same_name": 0.5,
    "similar_name": 0.35,
    "same_date_of_birth": 0.2,
    "same_birth_year": 0.1,
    "same_sex": 0.05,
    "same_area": 0.1,
    "same_region": 0.05,
}
_BEST_NAME_MATCH = 0.85
_DOCUMENT_SCORE = 0.9

_KNOWN_SEXES = frozenset({"female", "male", "other"})


# --- names -------------------------------------------------------------------------------

# An apostrophe joins (N'Diaye, Ndiaye); any other non-letter separates words.
_APOSTROPHES = frozenset("'`\u00b4\u02bb\u02bc\u2018\u2019")


def normalize_name(s: str) -> str:
    """Casefold, strip accents, join at apostrophes, keep letters and single spaces."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", s).casefold())
    kept: list[str] = []
    for char in folded:
        if char.isalpha():
            kept.append(char)
        elif char in _APOSTROPHES or unicodedata.category(char).startswith("M"):
            continue  # accents and apostrophes vanish without splitting the word
        else:
            kept.append(" ")
    return " ".join("".join(kept).split())


_VOWELS = frozenset("aeiu")  # after `_LETTERS` has folded o into u and y into i
_LETTERS = str.maketrans({"c": "k", "q": "k", "y": "i", "w": "u", "o": "u"})


def _spell_word(word: str) -> str:
    """The phonetic spelling of one normalized word, before the alias table."""
    w = word.replace("x", "ks")
    w = w.replace("ch", "x").replace("sh", "x")  # one symbol for the sh sound: Cheick, Sheikh
    w = w.replace("ph", "f").replace("dj", "j")
    w = re.sub(r"^di(?=[aeiouy])", "j", w)  # Diallo, Jallow; Diarra, Jarra
    w = w.replace("qu", "k")
    w = re.sub(r"gu(?=[eiy])", "g", w)  # Guindo, Gindo
    w = re.sub(r"c(?=[eiy])", "s", w)  # Cissé, Sissé
    w = w.translate(_LETTERS)  # Coulibaly, Kulibali; Oumar, Omar, Umar; Ouattara, Wattara
    # A silent h: at the start (Hawa, Awa) or after a consonant (Thiam, Cheikh).
    w = "".join(char for i, char in enumerate(w) if char != "h" or (i > 0 and w[i - 1] in _VOWELS))
    w = re.sub(r"(.)\1+", r"\1", w)  # Moussa, Musa; Doumbiya, Doumbia
    if len(w) > 2 and w.endswith("e"):
        w = w[:-1]  # Traoré, Traor; Ousmane, Usman
    return w


# Variants that differ by more than a transliteration, keyed through `_spell_word`.
_ALIAS_SPELLINGS = {
    "fatoumata": ("fatimata",),
    "ibrahima": ("ibrahim", "brahima", "brahim", "brehima"),
    "mohamed": ("muhammad", "mohammad", "mouhammad"),
}
_ALIASES = {
    _spell_word(variant): _spell_word(canonical)
    for canonical, variants in _ALIAS_SPELLINGS.items()
    for variant in variants
}


def _word_key(word: str) -> str:
    spelled = _spell_word(word)
    return _ALIASES.get(spelled, spelled)


def phonetic_key(s: str, *, any_order: bool = False) -> str:
    """Key each word of the name for West African transliterations; `any_order` sorts them.

    Variants collide (Coulibaly/Koulibaly, Cissé/Sissé, Doumbia/Doumbiya, Mamadou/Mamadu,
    Fatoumata/Fatimata) while different names stay apart (Traoré/Touré/Diarra). Given names
    use `any_order=True`, so "Aminata Fatoumata" and "Fatoumata Aminata" collide.
    """
    words = [_word_key(word) for word in normalize_name(s).split()]
    if any_order:
        words.sort()
    return " ".join(word for word in words if word)


def edit_distance(a: str, b: str, *, bound: int) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from a to b, capped at bound + 1."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    if len(a) > len(b):
        a, b = b, a
    before: list[int] | None = None
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + cost)
            if before is not None and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > bound:
            return bound + 1
        before, row = row, current
    return min(row[-1], bound + 1)


def _allowed_edits(length: int) -> int:
    """How many edits still count as a typo of a name this long (none for Awa, Ada, Ba)."""
    if length <= 3:
        return 0
    return 1 if length <= 7 else 2


def _close(a: str, b: str) -> bool:
    bound = _allowed_edits(min(len(a), len(b)))
    return bound > 0 and edit_distance(a, b, bound=bound) <= bound


_SAME, _SIMILAR = "same", "similar"


def _name_part_agreement(norm_a: str, key_a: str, norm_b: str, key_b: str) -> str | None:
    """Whether one name of a and one name of b are the same, similar, or neither."""
    if not key_a or not key_b:
        return None
    if key_a == key_b:
        return _SAME
    words_a, words_b = set(key_a.split()), set(key_b.split())
    if words_a <= words_b or words_b <= words_a:
        return _SIMILAR  # "Aminata" and "Aminata Fatoumata"
    # A typo seldom hits the first letter, and Mamadou is not Amadou.
    if key_a[0] == key_b[0] and (_close(norm_a, norm_b) or _close(key_a, key_b)):
        return _SIMILAR
    return None


# --- documents and places ----------------------------------------------------------------

_DOCUMENT_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015./\\_]+")


def normalize_document_number(s: str) -> str:
    """Uppercase and drop spaces, dashes, dots and slashes: "ab 12-34.5/6" is "AB123456"."""
    upper = unicodedata.normalize("NFKC", s).upper()
    # Composed again: dropping a separator can bring a letter and an accent together.
    return unicodedata.normalize("NFKC", _DOCUMENT_SEPARATORS.sub("", upper))


def _is_real_document_number(number: str) -> bool:
    """False for the fillers typed when a form insists: "N/A", "NEANT", "000000", "123456"."""
    if len(number) < 5 or not any(char.isdigit() for char in number):
        return False
    if len(set(number)) <= 2:
        return False
    return number not in "01234567890123456789" and number not in "98765432109876543210"


def region_of(area_code: str) -> str | None:
    """The region an area code lies in, by its first two segments: "ML-1-03" is in "ML-1"."""
    segments = area_code.strip().upper().split("-")
    if len(segments) < 2 or not all(segments[:2]):
        return None
    return "-".join(segments[:2])


# --- the facts compared ------------------------------------------------------------------


@dataclass(frozen=True)
class BeneficiaryFacts:
    """What matching knows of a case's beneficiary, normalized on construction.

    `birth_year` is taken from `date_of_birth` when that is given. `document_numbers`
    accepts raw numbers and keeps them normalized, sorted and unique, without fillers such
    as "N/A". `region_code` defaults to `region_of(area_code)`; pass it when the areas
    table knows better.
    """

    given_name: str
    family_name: str
    sex: str = "unknown"
    birth_year: int | None = None
    date_of_birth: date | None = None
    document_numbers: tuple[str, ...] = ()
    area_code: str | None = None
    region_code: str | None = None

    def __post_init__(self) -> None:
        if self.date_of_birth is not None:
            object.__setattr__(self, "birth_year", self.date_of_birth.year)
        numbers = {normalize_document_number(n) for n in self.document_numbers}
        real = tuple(sorted(n for n in numbers if _is_real_document_number(n)))
        object.__setattr__(self, "document_numbers", real)
        sex = (self.sex or "").strip().casefold()
        object.__setattr__(self, "sex", sex if sex in _KNOWN_SEXES else "unknown")
        area = (self.area_code or "").strip().upper() or None
        object.__setattr__(self, "area_code", area)
        region = (self.region_code or "").strip().upper() or None
        if region is None and area is not None:
            region = region_of(area)
        object.__setattr__(self, "region_code", region)

    @cached_property
    def family_normalized(self) -> str:
        return normalize_name(self.family_name)

    @cached_property
    def given_normalized(self) -> str:
        return " ".join(sorted(normalize_name(self.given_name).split()))

    @cached_property
    def family_key(self) -> str:
        return phonetic_key(self.family_name)

    @cached_property
    def given_key(self) -> str:
        return phonetic_key(self.given_name, any_order=True)


@dataclass(frozen=True)
class Match:
    """A probable duplicate: a score in 0..1 (at least `THRESHOLD`) and its reasons."""

    score: float
    reasons: tuple[str, ...]


# --- blocking ----------------------------------------------------------------------------


def facts_of(case: Mapping[str, Any]) -> BeneficiaryFacts:
    """The facts of a case as stored (its `beneficiary` JSON and `return_area_code`)."""
    person = case["beneficiary"] or {}
    born = person.get("date_of_birth")
    return BeneficiaryFacts(
        given_name=person.get("given_name") or "",
        family_name=person.get("family_name") or "",
        sex=person.get("sex") or "unknown",
        birth_year=person.get("birth_year"),
        date_of_birth=date.fromisoformat(born) if born else None,
        document_numbers=tuple(d.get("number", "") for d in person.get("id_documents") or []),
        area_code=case.get("return_area_code"),
    )


def blocking_keys(b: BeneficiaryFacts) -> set[str]:
    """The keys under which b is stored and searched for candidates (at most six).

    - "doc:<number>" for each of the first `MAX_DOCUMENT_KEYS` document numbers;
    - "name:<year>:<key>" for the phonetic family name and for the phonetic given names:
      one shared namespace, so a misspelt or changed family name is still found through
      the given names, a misspelt given name through the family name, and a pair whose
      family and given names were swapped through either;
    - "full:<year>:<key>|<key>" for both names (sorted, so swaps collide too). The name
      blocks of Traoré or Aminata born in 1990 are crowded and get cut at
      `MAX_CANDIDATES`; this narrow block still brings the usual duplicate, whose names
      agree phonetically, whatever the cut.

    Name keys need the birth year: without it `score` can match on a document only.
    """
    keys = {f"doc:{number}" for number in b.document_numbers[:MAX_DOCUMENT_KEYS]}
    if b.birth_year is not None:
        names = [key for key in (b.family_key, b.given_key) if key]
        keys.update(f"name:{b.birth_year}:{key}" for key in names)
        if len(names) == 2:
            keys.add(f"full:{b.birth_year}:{'|'.join(sorted(names))}")
    return keys


# --- scoring -----------------------------------------------------------------------------

_CONFLICT = "conflict"


def _name_agreement(a: BeneficiaryFacts, b: BeneficiaryFacts) -> str | None:
    family = _name_part_agreement(
        a.family_normalized, a.family_key, b.family_normalized, b.family_key
    )
    given = _name_part_agreement(a.given_normalized, a.given_key, b.given_normalized, b.given_key)
    if family == _SAME and given == _SAME:
        return "same_name"
    if family and given:
        return "similar_name"
    # Family and given names typed in each other's field: close, but not the same record.
    crossed_family = _name_part_agreement(
        a.family_normalized, a.family_key, b.given_normalized, b.given_key
    )
    crossed_given = _name_part_agreement(
        a.given_normalized, a.given_key, b.family_normalized, b.family_key
    )
    if crossed_family and crossed_given:
        return "similar_name"
    return None


def _birth_agreement(a: BeneficiaryFacts, b: BeneficiaryFacts) -> str | None:
    if a.date_of_birth is not None and a.date_of_birth == b.date_of_birth:
        return "same_date_of_birth"
    if a.birth_year is None or b.birth_year is None:
        return None
    if a.birth_year == b.birth_year:
        # Two different dates in one year still count: "1 January" stands in for "unknown".
        return "same_birth_year"
    return _CONFLICT if abs(a.birth_year - b.birth_year) > 1 else None


def _sex_agreement(a: BeneficiaryFacts, b: BeneficiaryFacts) -> str | None:
    if a.sex == "unknown" or b.sex == "unknown":
        return None
    return "same_sex" if a.sex == b.sex else _CONFLICT


def _place_agreement(a: BeneficiaryFacts, b: BeneficiaryFacts) -> str | None:
    if a.area_code is not None and a.area_code == b.area_code:
        return "same_area"
    if a.region_code is not None and a.region_code == b.region_code:
        return "same_region"
    return None


def _ordered(reasons: set[str]) -> tuple[str, ...]:
    return tuple(reason for reason in REASONS if reason in reasons)


def _weight(reasons: tuple[str, ...]) -> float:
    return sum(_WEIGHTS.get(reason, 0.0) for reason in reasons)


def score(a: BeneficiaryFacts, b: BeneficiaryFacts) -> Match | None:
    """Whether a and b are probably one person: a `Match` with score and reasons, or None.

    A shared document number matches on its own (0.9, up to 1.0 with the other agreements).
    Otherwise the names must be the same or similar, the date of birth or the birth year
    the same, and the sexes must not differ (an unknown sex does not contradict); the same
    area, or else the same region, raises the score. Symmetric and deterministic.
    """
    name = _name_agreement(a, b)
    birth = _birth_agreement(a, b)
    sex = _sex_agreement(a, b)
    place = _place_agreement(a, b)
    agreements = {
        agreement
        for agreement in (name, birth, sex, place)
        if agreement is not None and agreement != _CONFLICT
    }

    if set(a.document_numbers) & set(b.document_numbers):
        corroboration = _ordered(agreements)
        total = _DOCUMENT_SCORE + (1 - _DOCUMENT_SCORE) * _weight(corroboration) / _BEST_NAME_MATCH
        return Match(round(min(total, 1.0), 3), ("same_id_document", *corroboration))

    if name is None or birth in (None, _CONFLICT) or sex == _CONFLICT:
        return None
    reasons = _ordered(agreements)
    total = round(_weight(reasons), 3)
    if total < THRESHOLD:
        return None
    return Match(total, reasons)
