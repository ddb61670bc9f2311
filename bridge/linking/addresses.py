"""Address normalisation and parsing for matching portal listings to CRM records.

Both sides are reduced to the same :class:`ParsedAddress` ``{city, street_type, street,
building, flat}`` so that they can be compared field by field:

* a Rentix ``propertyAddress`` string, e.g. ``"Chișinău, str. Columna 81/1"``,
  ``"mun. Chișinău, bd. Ștefan cel Mare 12, ap. 45"`` or ``"Columna St 81 apt 3"``
  (:func:`parse_address_text`);
* a canonical CRM ``address`` object ``{line1, line2, building_name, city, ...}``
  (:func:`parse_canonical_address`).

Conventions (the same on both sides):

* Text is lower-cased and stripped of diacritics with ``unicodedata`` (NFKD, combining marks
  dropped), so ``ș`` (comma below), ``ş`` (cedilla) and ``s`` compare equal, likewise ``ț``/``ţ``/
  ``t``, ``ă``/``a``, ``â``/``a`` and ``î``/``i``. Romanian wrote one sound ``î`` inside words
  before 1993 and ``â`` since (``Sfînt``/``Sfânt``, ``Hîncești``/``Hâncești``), and people
  typing without diacritics give ``Sfint`` or ``Sfant``; so names are *compared* with ``a`` and
  ``i`` after the first letter treated as one (:func:`fold_vowels`), while parsed values keep
  the plain ASCII spelling.
* ``81/1`` is **building 81, block 1**, as in Moldovan addresses; it is *not* a flat. The building
  is kept as the string ``"81/1"``; ``81 bl. 1`` / ``81 corp. 1`` / ``81 block 1`` are written the
  same way. A flat is only ever what an explicit marker introduces: ``ap. 45``, ``apt 3``,
  ``apartment 3``, ``flat 3``, ``kv. 3``, ``of. 12`` (office), ``#3``. A bare number in
  ``line2`` is read as a flat too, since that is what line 2 holds.
* Numbers of four or more digits are never house numbers (``str. 31 August 1989``).
* Street types are folded to one canonical token: ``str`` (str./strada/st./street/ul.),
  ``bd`` (bd./bul./bulevardul/blvd/boulevard), ``sos`` (șos./șoseaua), ``al`` (al./aleea),
  ``str-la`` (str-la/stradela/lane), ``pr`` (pr./prospectul), ``pta`` (piața/p-ța/square),
  ``ave`` (avenue/ave), ``road`` (road/rd), ``calea``, ``drive``. The type may come before the
  name (``str. Columna``) or after it (``Columna St``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Spelling variants of one street type -> canonical token (keys already normalised).
STREET_TYPES: dict[str, str] = {
    **dict.fromkeys(["str", "strada", "st", "street", "ul", "ulita", "strasse"], "str"),
    **dict.fromkeys(["bd", "bul", "bdul", "blvd", "bulevardul", "bulevard", "boulevard"], "bd"),
    **dict.fromkeys(["sos", "soseaua", "sosea", "highway", "hwy"], "sos"),
    **dict.fromkeys(["al", "aleea", "alee", "alley"], "al"),
    **dict.fromkeys(["str-la", "strla", "stradela", "lane", "ln", "per", "pereulok"], "str-la"),
    **dict.fromkeys(["pr", "prospectul", "prospect", "pr-t", "prt", "pr-ul"], "pr"),
    **dict.fromkeys(["piata", "p-ta", "pta", "square", "sq", "pl", "plaza"], "pta"),
    **dict.fromkeys(["avenue", "ave", "av"], "ave"),
    **dict.fromkeys(["road", "rd"], "road"),
    **dict.fromkeys(["drive", "dr"], "drive"),
    "calea": "calea",
}

# Street types that are the same kind of wide avenue under different names; a mismatch
# between them is a translation habit, not evidence of a different street.
STREET_TYPE_FAMILIES: tuple[frozenset[str], ...] = (frozenset({"bd", "ave", "pr"}),)

# Prefixes before a locality name: municipality, town, village, commune, city.
_CITY_PREFIXES = frozenset(
    {"mun", "municipiul", "or", "orasul", "s", "satul", "com", "comuna", "city", "g", "gorod"}
)
# Segments that say nothing about the street: district, country, postcode markers.
_NOISE_SEGMENT_WORDS = frozenset(
    {"r-nul", "raionul", "rn", "sect", "sectorul", "sector", "moldova", "md", "republica"}
)
_FLAT_MARKERS = frozenset(
    {"ap", "apt", "apart", "apartment", "apartamentul", "flat", "kv", "kvartira", "of", "office",
     "unit", "#"}
)
_BLOCK_MARKERS = frozenset({"bl", "bloc", "blocul", "block", "corp", "corpul", "k"})
_NUMBER_MARKERS = frozenset({"nr", "no", "numarul", "n"})
# Markers whose number must be dropped rather than mistaken for a flat or building.
_IGNORED_MARKERS = frozenset({"et", "etaj", "etajul", "floor", "fl", "sc", "scara", "entrance"})

# Well-known spellings of the same locality (after normalisation).
CITY_ALIASES: dict[str, str] = {
    "kishinev": "chisinau",
    "kishinau": "chisinau",
    "chisineu": "chisinau",
    "beltsy": "balti",
    "bendery": "tighina",
    "bender": "tighina",
}
# Localities recognised without a comma or prefix ("Chisinau str. Columna 81").
KNOWN_CITIES = frozenset(
    {"chisinau", "balti", "cahul", "orhei", "ungheni", "soroca", "comrat", "tiraspol", "tighina",
     "straseni", "ialoveni", "durlesti", "codru", "stauceni", "singera", "vatra", "hincesti",
     "edinet", "causeni", "floresti", "drochia", "bucuresti", "iasi"}
)

_HOUSE_RE = re.compile(r"^(\d{1,3})([a-z]?)$")
_HOUSE_BLOCK_RE = re.compile(r"^(\d{1,3})([a-z]?)/(\d{1,3}[a-z]?)$")
_FLAT_RE = re.compile(r"^\d{1,4}[a-z]?$")
_POSTCODE_RE = re.compile(r"^md-?\d{4}$")
_GLUED_MARKER_RE = re.compile(r"^(ap|apt|kv|of|bl|nr|et)(\d+[a-z]?)$")


@dataclass(frozen=True)
class ParsedAddress:
    """An address reduced to comparable parts; every part is normalised text or ``None``."""

    city: str | None = None
    street_type: str | None = None
    street: str | None = None
    building: str | None = None
    flat: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "city": self.city,
            "street_type": self.street_type,
            "street": self.street,
            "building": self.building,
            "flat": self.flat,
        }


def strip_diacritics(text: str) -> str:
    """Accents off: ``ș``/``ş``>``s``, ``ț``/``ţ``>``t``, ``ă``/``â``>``a``, ``î``>``i``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_text(text: str | None) -> str:
    """Lower-case, strip diacritics, turn punctuation into spaces, collapse whitespace.

    Hyphens inside words and ``/`` between digits survive (``str-la``, ``81/1``).
    """
    if not text:
        return ""
    text = strip_diacritics(text).casefold()
    text = re.sub(r"[^a-z0-9/#\-,\s]", " ", text)
    text = re.sub(r"(?<![a-z0-9])-|-(?![a-z0-9])", " ", text)  # dashes used as separators
    text = re.sub(r"\s*/\s*", "/", text)
    return re.sub(r"\s+", " ", text).strip(" ,")


def normalize_city(text: str | None) -> str | None:
    """``"mun. Chișinău"`` -> ``"chisinau"``; ``None`` when nothing is left."""
    words = [w for w in normalize_text(text).replace(",", " ").split() if w not in _CITY_PREFIXES]
    if not words:
        return None
    name = " ".join(words)
    return CITY_ALIASES.get(name, name)


def normalize_street_type(token: str | None) -> str | None:
    if not token:
        return None
    return STREET_TYPES.get(normalize_text(token).replace(" ", ""))


def street_types_compatible(a: str | None, b: str | None) -> bool:
    if a is None or b is None or a == b:
        return True
    return any(a in fam and b in fam for fam in STREET_TYPE_FAMILIES)


def normalize_flat(text: str | None) -> str | None:
    """``"ap. 045"`` -> ``"45"``; leading zeros dropped so ``045`` and ``45`` compare equal."""
    words = [w for w in normalize_text(text).replace(",", " ").split() if w not in _FLAT_MARKERS]
    if len(words) != 1 or not _FLAT_RE.match(words[0]):
        return None
    return words[0].lstrip("0") or "0"


def _tokens(segment: str) -> list[str]:
    """Split a normalised segment into words, un-gluing ``ap45`` and ``81a/1``-style tokens."""
    out: list[str] = []
    for word in segment.split():
        glued = _GLUED_MARKER_RE.match(word)
        if _POSTCODE_RE.match(word):
            continue
        if glued:
            out.extend(glued.groups())
        elif word.startswith("#") and len(word) > 1:
            out.extend(["#", word[1:]])
        elif "-" in word and word not in STREET_TYPES and word not in _NOISE_SEGMENT_WORDS:
            out.extend(w for w in word.split("-") if w)  # "alba-iulia" == "alba iulia"
        else:
            out.append(word)
    return out


def _is_city_segment(words: list[str]) -> str | None:
    """The city named by a whole comma segment, if the segment is just a locality."""
    if not words or any(ch.isdigit() for w in words for ch in w):
        return None
    if words[0] in _CITY_PREFIXES:
        return normalize_city(" ".join(words))
    name = " ".join(words)
    name = CITY_ALIASES.get(name, name)
    return name if name in KNOWN_CITIES else None


@dataclass
class _Parts:
    city: str | None = None
    street_type: str | None = None
    street_words: list[str] | None = None
    building: str | None = None
    block: str | None = None
    flat: str | None = None


def _take_markers(words: list[str], parts: _Parts) -> list[str]:
    """Pull out ``ap. 45``, ``bl. 1``, ``et. 3`` and ``nr.`` pairs; return the remaining words."""
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if nxt is not None and _FLAT_RE.match(nxt):
            if word in _FLAT_MARKERS:
                parts.flat = nxt.lstrip("0") or "0"
                i += 2
                continue
            if word in _BLOCK_MARKERS:
                parts.block = parts.block or nxt  # line 1 wins over a conflicting line 2
                i += 2
                continue
            if word in _IGNORED_MARKERS:
                i += 2
                continue
        if word in _NUMBER_MARKERS and nxt is not None and nxt[:1].isdigit():
            i += 1  # "nr. 81": keep the number, drop the marker
            continue
        rest.append(word)
        i += 1
    return rest


def _take_house_number(words: list[str], parts: _Parts) -> list[str]:
    """Take the house number: the last number-like word, or a leading one ("81 Columna St")."""
    for idx in [*range(len(words) - 1, -1, -1)]:
        word = words[idx]
        block = _HOUSE_BLOCK_RE.match(word)
        plain = _HOUSE_RE.match(word)
        if block or plain:
            # A number in the middle of the name ("31 august") is part of it, not a house.
            if 0 < idx < len(words) - 1:
                continue
            if idx == 0 and len(words) > 1 and _street_type_at(words, 1):
                continue  # "31 strada ..." is unusual; treat leading digits as the name
            if block:
                parts.building = block.group(1) + block.group(2)
                parts.block = block.group(3)
            else:
                parts.building = word
            return words[:idx] + words[idx + 1 :]
    return words


def _street_type_at(words: list[str], idx: int) -> str | None:
    return STREET_TYPES.get(words[idx]) if 0 <= idx < len(words) else None


def _take_street_type(words: list[str], parts: _Parts) -> list[str]:
    """Remove a street-type word at the start (Romanian) or the end (English) of the name."""
    if len(words) > 1 and _street_type_at(words, 0):
        parts.street_type = STREET_TYPES[words[0]]
        return words[1:]
    if len(words) > 1 and _street_type_at(words, len(words) - 1):
        parts.street_type = STREET_TYPES[words[-1]]
        return words[:-1]
    return words


def _split_leading_city(words: list[str], parts: _Parts) -> list[str]:
    """``"chisinau str columna 81"`` without a comma: peel off the known city before the type."""
    for idx in range(1, len(words)):
        if _street_type_at(words, idx):
            city = _is_city_segment(words[:idx])
            if city:
                parts.city = parts.city or city
                return words[idx:]
            break
    return words


def _parse_street_segment(words: list[str], parts: _Parts) -> None:
    words = _split_leading_city(words, parts)
    words = _take_markers(words, parts)
    words = _take_house_number(words, parts)
    words = _take_street_type(words, parts)
    if words:
        parts.street_words = words


def _finish(parts: _Parts) -> ParsedAddress:
    building = parts.building
    if building and parts.block:
        building = f"{building}/{parts.block}"
    street = " ".join(parts.street_words) if parts.street_words else None
    return ParsedAddress(
        city=parts.city,
        street_type=parts.street_type,
        street=street,
        building=building,
        flat=parts.flat,
    )


def _parse_into(text: str | None, parts: _Parts) -> None:
    for raw_segment in normalize_text(text).split(","):
        words = _tokens(raw_segment)
        if len(words) == 1 and words[0].isdigit() and len(words[0]) >= 4:
            continue  # a bare postcode
        if not words or words[0] in _NOISE_SEGMENT_WORDS:
            continue  # empty, a postcode, a district or the country
        city = _is_city_segment(words)
        if city:
            parts.city = parts.city or city
            continue
        if parts.street_words is None:
            _parse_street_segment(words, parts)
        else:
            _parse_extra_segment(words, parts)


def _parse_extra_segment(words: list[str], parts: _Parts) -> None:
    """A segment after the street: ``ap. 45``, ``bl. 2``, ``81/1`` or an unknown locality."""
    rest = _take_markers(words, parts)
    if not rest:
        return
    if parts.building is None and len(rest) == 1 and (
        _HOUSE_RE.match(rest[0]) or _HOUSE_BLOCK_RE.match(rest[0])
    ):
        _take_house_number(rest, parts)
    elif parts.city is None and not any(ch.isdigit() for w in rest for ch in w):
        parts.city = normalize_city(" ".join(rest))


def parse_address_text(text: str | None, *, city: str | None = None) -> ParsedAddress:
    """Parse a free-text address such as a Rentix ``propertyAddress``.

    ``city`` (already known from elsewhere) wins over a city found in the text.
    """
    parts = _Parts(city=normalize_city(city))
    _parse_into(text, parts)
    return _finish(parts)


def parse_canonical_address(address: Mapping[str, Any] | None) -> ParsedAddress:
    """Parse a canonical CRM address ``{line1, line2, building_name, city, ...}``.

    ``line2`` holds the flat (``"ap. 45"`` or just ``"45"``) or extra markers. ``building_name``
    is used as the house number only when ``line1`` has none and it looks like one.
    """
    if not address:
        return ParsedAddress()
    parts = _Parts(city=normalize_city(address.get("city")))
    _parse_into(address.get("line1"), parts)
    line2 = address.get("line2")
    if line2:
        bare_flat = normalize_flat(line2)
        if bare_flat is not None:
            parts.flat = parts.flat or bare_flat
        else:
            _parse_extra_segment(_tokens(normalize_text(line2).replace(",", " ")), parts)
    name = normalize_text(address.get("building_name"))
    if parts.building is None and (_HOUSE_RE.match(name) or _HOUSE_BLOCK_RE.match(name)):
        _take_house_number([name], parts)
    return _finish(parts)


def fold_vowels(text: str) -> str:
    """Treat ``a`` and ``i`` inside a word as one letter (``sfant`` == ``sfint``), for comparing.

    Word-initial letters are kept, as ``î`` was always written at the start of a word.
    """
    return " ".join(w[:1] + w[1:].replace("i", "a") for w in text.split())


def city_match(a: str | None, b: str | None) -> bool:
    """Two normalised city names are the same place (``hincesti`` == ``hancesti``)."""
    return a is not None and b is not None and fold_vowels(a) == fold_vowels(b)


def _word_matches(a: str, b: str) -> bool:
    """Words match when equal up to :func:`fold_vowels`, or when one is the other's initial."""
    if a == b or fold_vowels(a) == fold_vowels(b):
        return True
    return (len(a) == 1 and b.startswith(a)) or (len(b) == 1 and a.startswith(b))


def street_match(a: str | None, b: str | None) -> str | None:
    """How two normalised street names relate: ``"same"``, ``"partial"`` or ``None`` (differ).

    ``partial`` covers a name that is the other with words left out or abbreviated to initials
    (``stefan cel mare`` vs ``stefan cel mare si sfint``, ``m eminescu`` vs ``mihai eminescu``).
    Words must appear in order, and at least one full (non-initial) word must match.
    """
    if a is None or b is None:
        return None
    if fold_vowels(a) == fold_vowels(b):
        return "same"
    short, long_ = sorted((a.split(), b.split()), key=len)
    pos, full_words = 0, 0
    for word in short:
        while pos < len(long_) and not _word_matches(word, long_[pos]):
            pos += 1
        if pos == len(long_):
            return None
        full_words += len(word) > 1 and len(long_[pos]) > 1
        pos += 1
    return "partial" if full_words else None


def building_match(a: str | None, b: str | None) -> str | None:
    """``"same"``, ``"partial"`` (``81`` vs ``81/1``: block given on one side only) or ``None``."""
    if a is None or b is None:
        return None
    if a == b:
        return "same"
    if a.split("/")[0] == b.split("/")[0] and ("/" in a) != ("/" in b):
        return "partial"
    return None
