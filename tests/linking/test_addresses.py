"""Address normalisation and parsing (bridge.linking.addresses)."""

from __future__ import annotations

import pytest

from bridge.linking.addresses import (
    ParsedAddress,
    building_match,
    city_match,
    normalize_city,
    normalize_flat,
    normalize_street_type,
    normalize_text,
    parse_address_text,
    parse_canonical_address,
    street_match,
    strip_diacritics,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ștefan", "Stefan"),  # comma below (U+0218)
        ("Ştefan", "Stefan"),  # cedilla (U+015E)
        ("ș ş ț ţ ă â î", "s s t t a a i"),
        ("Chișinău", "Chisinau"),
        ("Chişinău", "Chisinau"),
    ],
)
def test_strip_diacritics_handles_comma_and_cedilla_forms(raw: str, expected: str) -> None:
    assert strip_diacritics(raw) == expected


def test_normalize_text_case_punctuation_and_spaces() -> None:
    assert normalize_text("  Str.  COLUMNA,  81 / 1 ") == "str columna, 81/1"
    assert normalize_text("p-ța Marii Adunări") == "p-ta marii adunari"
    assert normalize_text(None) == ""


@pytest.mark.parametrize(
    ("token", "canonical"),
    [
        ("str.", "str"), ("strada", "str"), ("St", "str"), ("street", "str"),
        ("bd.", "bd"), ("bd", "bd"), ("bul.", "bd"), ("bulevardul", "bd"), ("Blvd", "bd"),
        ("șos.", "sos"), ("şos.", "sos"), ("sos.", "sos"), ("șoseaua", "sos"),
        ("al.", "al"), ("aleea", "al"),
        ("str-la", "str-la"), ("stradela", "str-la"),
        ("pr.", "pr"), ("prospectul", "pr"),
        ("piața", "pta"), ("p-ța", "pta"), ("p-ţa", "pta"),
        ("avenue", "ave"), ("ave", "ave"), ("road", "road"), ("rd", "road"),
        ("Columna", None),
    ],
)
def test_street_type_spellings(token: str, canonical: str | None) -> None:
    assert normalize_street_type(token) == canonical


def test_city_prefixes_and_aliases() -> None:
    assert normalize_city("mun. Chișinău") == "chisinau"
    assert normalize_city("Kishinev") == "chisinau"
    assert normalize_city("or. Durlești") == "durlesti"
    assert normalize_city("") is None
    assert city_match("hincesti", "hancesti")
    assert not city_match("balti", "chisinau")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Chișinău, str. Columna 81/1", ("chisinau", "str", "columna", "81/1", None)),
        (
            "mun. Chișinău, bd. Ștefan cel Mare 12, ap. 45",
            ("chisinau", "bd", "stefan cel mare", "12", "45"),
        ),
        ("Columna St 81 apt 3", (None, "str", "columna", "81", "3")),
        ("81 Columna Street, Kishinev", ("chisinau", "str", "columna", "81", None)),
        ("Chisinau str. Columna 81", ("chisinau", "str", "columna", "81", None)),
        ("strada Columna nr. 81 bl. 1 ap 045 et. 3", (None, "str", "columna", "81/1", "45")),
        ("str. 31 August 1989 78, ap.12", (None, "str", "31 august 1989", "78", "12")),
        ("Str. Alba-Iulia 75/3 of.12", (None, "str", "alba iulia", "75/3", "12")),
        ("bd. Dacia 23/2, #7", (None, "bd", "dacia", "23/2", "7")),
        (
            "MD-2001 Chișinău, r-nul Botanica, str-la Studenților 5A",
            ("chisinau", "str-la", "studentilor", "5a", None),
        ),
        ("p-ța Marii Adunări Naționale 1", (None, "pta", "marii adunari nationale", "1", None)),
        ("Columna", (None, None, "columna", None, None)),
        ("", (None, None, None, None, None)),
    ],
)
def test_parse_address_text(text: str, expected: tuple[str | None, ...]) -> None:
    parsed = parse_address_text(text)
    assert tuple(parsed.as_dict().values()) == expected


def test_slash_is_building_block_not_flat_on_both_sides() -> None:
    # "81/1" is building 81, block 1; the flat only ever comes from an explicit marker.
    portal = parse_address_text("Chișinău, str. Columna 81/1")
    crm = parse_canonical_address({"line1": "str. Columna 81/1", "city": "Chișinău"})
    assert portal == crm == ParsedAddress("chisinau", "str", "columna", "81/1", None)
    assert parse_address_text("str. Columna 81 bl. 1").building == "81/1"


def test_parse_canonical_address_reads_line2_and_building_name() -> None:
    parsed = parse_canonical_address(
        {"line1": "strada Columna, 81/1", "line2": "45", "city": "Chisinau", "country": "MD"}
    )
    assert parsed == ParsedAddress("chisinau", "str", "columna", "81/1", "45")
    from_name = parse_canonical_address(
        {"line1": "Columna", "building_name": "81/1", "line2": "ap. 5, et. 2"}
    )
    assert (from_name.building, from_name.flat) == ("81/1", "5")
    assert parse_canonical_address({"line1": "str. Columna 81", "line2": "Apt 7"}).flat == "7"
    assert parse_canonical_address(None) == ParsedAddress()


def test_both_sides_agree_across_spelling_styles() -> None:
    a = parse_address_text("mun. Chişinău, bulevardul Ştefan cel Mare şi Sfînt 104, ap.96")
    b = parse_canonical_address(
        {"line1": "bd. Ștefan cel Mare și Sfânt 104", "line2": "ap. 96", "city": "Chișinău"}
    )
    assert (a.city, a.street_type, a.building, a.flat) == (b.city, b.street_type, "104", "96")
    assert street_match(a.street, b.street) == "same"


def test_normalize_flat() -> None:
    assert normalize_flat("ap. 045") == "45"
    assert normalize_flat("12A") == "12a"
    assert normalize_flat("et. 3, sc. 2") is None


def test_street_match() -> None:
    assert street_match("columna", "columna") == "same"
    assert street_match("mircea cel batran", "mircea cel batrin") == "same"  # â vs î spelling
    assert street_match("stefan cel mare", "stefan cel mare si sfint") == "partial"
    assert street_match("m eminescu", "mihai eminescu") == "partial"
    assert street_match("columna", "colina") is None
    assert street_match("mihai eminescu", "mihai viteazul") is None
    assert street_match("m", "mihai") is None  # an initial alone is not enough
    assert street_match(None, "columna") is None


def test_building_match() -> None:
    assert building_match("81/1", "81/1") == "same"
    assert building_match("81", "81/1") == "partial"
    assert building_match("81/1", "81/2") is None
    assert building_match("81", "83") is None
    assert building_match("81a", "81") is None
