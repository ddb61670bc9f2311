"""Match hand-made Rentix listings to CRM records before linking them by external ID.

Pure and deterministic: no I/O except the report writers. The caller fetches the portal's
listings (read model: ``id``, ``externalId``, ``formData``) and the CRM's canonical listings
(contract section 3), calls :func:`match_listings`, and links only ``report.matched``.

How a pair is judged (see :func:`score_pair`):

* **Vetoes** (the pair is never a candidate, whatever else agrees): different deal type (rent vs
  sale), different property type, different city, different street, different building number,
  different flat number. Building/flat vetoes apply only when both sides state one.
* **Score** = 1 minus penalties for each disagreement or gap: flat or building stated on one
  side only, street type or name only partly agreeing, price (currency-normalised), rooms,
  area, floor, subtype, coordinates. A perfect pair scores 1.0; ``min_confidence`` (0.9) allows
  roughly one unknown flat plus small price/area drift.
* **Ceiling**: penalties are either disagreement (a different price) or doubt (a flat not
  stated, a location that cannot be compared). A pair's ceiling is its score with the doubt
  given back: what it could be if the unknowns agree.
* **Confident** = score >= ``min_confidence`` and at least ``min_margin`` ahead of the runner-up
  for the portal listing *and* for the CRM listing, so the assignment is one-to-one and never a
  coin toss between adjacent flats. Runners-up count with their ceiling, so a twin flat whose
  number is unknown blocks a link. One exception on the CRM side: a pair that *pinpoints* the
  unit (street, building and flat stated on both sides and equal) is only challenged by another
  pinpointing portal listing; a vaguer one could at most be a duplicate posting.
  Everything else with candidates is *ambiguous*, for a human.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bridge.linking.addresses import (
    ParsedAddress,
    building_match,
    city_match,
    parse_address_text,
    parse_canonical_address,
    street_match,
    street_types_compatible,
)

DEFAULT_MIN_CONFIDENCE = 0.9
DEFAULT_MIN_MARGIN = 0.05
# A pair is a candidate when its score reaches CANDIDATE_FLOOR, or when it could still reach
# RIVAL_FLOOR once its unknowns are filled in (then it can block another, confident-looking pair).
CANDIDATE_FLOOR = 0.5
RIVAL_FLOOR = 0.8
MAX_CANDIDATES = 5

# Approximate rates into EUR. Only used to compare prices entered in different currencies,
# which is why cross-currency comparisons get a wider tolerance than same-currency ones.
DEFAULT_RATES_TO_EUR: dict[str, float] = {"EUR": 1.0, "USD": 0.92, "MDL": 0.051}

# CRM subtype spellings -> Rentix propertySecondaryType.
SUBTYPE_ALIASES: dict[str, str] = {
    "studio-apartment": "apartment",
    "studio": "apartment",
    "flat": "apartment",
    "penthouse": "apartment",
    "duplex": "apartment",
    "villa": "house",
    "townhouse": "house",
    "cottage": "house",
    "shop": "trade",
    "retail": "trade",
}
# Subtype -> property type, to compare types when one side only states the subtype.
SUBTYPE_TYPES: dict[str, str] = {
    **dict.fromkeys(["apartment", "house", "room", "residential-land"], "residential"),
    **dict.fromkeys(
        ["office", "trade", "warehouse", "production", "business", "commercial-land"],
        "commercial",
    ),
    **dict.fromkeys(
        ["underground-parking", "open-parking", "garage", "covered-parking"], "parking"
    ),
}


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True)
class Candidate:
    """A CRM listing that may be the portal listing; ``ceiling`` as in :class:`PairScore`."""

    external_ref: str
    score: float
    ceiling: float
    pinpointed: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "external_ref": self.external_ref,
            "score": self.score,
            "ceiling": self.ceiling,
            "pinpointed": self.pinpointed,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Match:
    portal_id: int | str
    external_ref: str
    confidence: float
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "portal_id": self.portal_id,
            "external_ref": self.external_ref,
            "confidence": self.confidence,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Ambiguous:
    portal_id: int | str
    why: str
    candidates: tuple[Candidate, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "portal_id": self.portal_id,
            "why": self.why,
            "candidates": [c.as_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class SkippedLink:
    """A portal listing that already carries an external ID; ``in_crm`` says if the ref exists."""

    portal_id: int | str
    external_ref: str
    in_crm: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "portal_id": self.portal_id,
            "external_ref": self.external_ref,
            "in_crm": self.in_crm,
        }


@dataclass(frozen=True)
class MatchReport:
    matched: tuple[Match, ...]
    ambiguous: tuple[Ambiguous, ...]
    unmatched_portal: tuple[int | str, ...]
    unmatched_crm: tuple[str, ...]
    skipped_linked: tuple[SkippedLink, ...]
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    min_margin: float = DEFAULT_MIN_MARGIN

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "min_margin": self.min_margin,
            "counts": self.counts(),
            "matched": [m.as_dict() for m in self.matched],
            "ambiguous": [a.as_dict() for a in self.ambiguous],
            "unmatched_portal": list(self.unmatched_portal),
            "unmatched_crm": list(self.unmatched_crm),
            "skipped_linked": [s.as_dict() for s in self.skipped_linked],
        }

    def counts(self) -> dict[str, int]:
        return {
            "matched": len(self.matched),
            "ambiguous": len(self.ambiguous),
            "unmatched_portal": len(self.unmatched_portal),
            "unmatched_crm": len(self.unmatched_crm),
            "skipped_linked": len(self.skipped_linked),
        }

    def summary(self) -> str:
        """A few lines of counts for a terminal."""
        c = self.counts()
        return "\n".join(
            [
                f"External-ID linking (min confidence {self.min_confidence:.2f}, "
                f"margin {self.min_margin:.2f})",
                f"  matched (confident)  {c['matched']:>5}",
                f"  ambiguous (review)   {c['ambiguous']:>5}",
                f"  unmatched portal     {c['unmatched_portal']:>5}",
                f"  unmatched CRM        {c['unmatched_crm']:>5}",
                f"  already linked       {c['skipped_linked']:>5}",
            ]
        )


@dataclass(frozen=True)
class PairScore:
    """The verdict on one portal/CRM pair: a veto reason, or a score with its reasons.

    ``ceiling`` is what the score would be if everything unknown (a flat not stated, no
    comparable location, a missing price) turned out to agree: how plausible the pair still is.
    ``pinpointed`` means both sides name the same street, building and flat (or no flat).
    """

    score: float
    ceiling: float
    pinpointed: bool
    reasons: tuple[str, ...]
    veto: str | None = None


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Features:
    key: int | str
    deal: str | None
    ptype: str | None
    subtype: str | None
    amount: float | None
    currency: str | None
    period: str | None
    rooms: int | None
    area: float | None
    floor: int | None
    address: ParsedAddress
    coords: tuple[float, float] | None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and number == int(number) else None


def _word(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower().replace("_", "-")


def _subtype(value: Any) -> str | None:
    word = _word(value)
    return SUBTYPE_ALIASES.get(word, word) if word else None


def _ptype(value: Any, subtype: str | None) -> str | None:
    return _word(value) or SUBTYPE_TYPES.get(subtype or "")


def _coords(lat: Any, lng: Any) -> tuple[float, float] | None:
    la, ln = _num(lat), _num(lng)
    if la is None or ln is None or not (-90 <= la <= 90 and -180 <= ln <= 180):
        return None
    return (la, ln)


def _portal_features(item: Mapping[str, Any]) -> _Features:
    form = item.get("formData") or item
    subtype = _subtype(form.get("propertySecondaryType"))
    coords = form.get("propertyCoordinates")
    if not isinstance(coords, Mapping):
        coords = {}
    return _Features(
        key=item["id"],
        deal=_word(form.get("announcementType")),
        ptype=_ptype(form.get("propertyType"), subtype),
        subtype=subtype,
        amount=_num(form.get("announcementValue")),
        currency=(_word(form.get("announcementCurrency")) or "").upper() or None,
        period=_word(form.get("announcementPayPeriod")),
        rooms=_int(form.get("propertyQuantitySizeValue")),
        area=_num(form.get("propertyArea")),
        floor=_int(form.get("propertyFloorNumber")),
        address=parse_address_text(form.get("propertyAddress")),
        coords=_coords(coords.get("lat"), coords.get("lng")),
    )


def _crm_features(listing: Mapping[str, Any]) -> _Features:
    subtype = _subtype(listing.get("property_subtype"))
    price = listing.get("price") or {}
    address = listing.get("address") or {}
    return _Features(
        key=listing["external_ref"],
        deal=_word(listing.get("deal_type")),
        ptype=_ptype(listing.get("property_type"), subtype),
        subtype=subtype,
        amount=_num(price.get("amount")),
        currency=(_word(price.get("currency")) or "").upper() or None,
        period=_word(price.get("period")),
        rooms=_int(listing.get("rooms")),
        area=_num(listing.get("area_sqm")),
        floor=_int(listing.get("floor")),
        address=parse_canonical_address(address),
        coords=_coords(address.get("lat"), address.get("lng")),
    )


# --------------------------------------------------------------------------- scoring


class _Veto(Exception):
    """Raised by a check when the pair cannot be the same listing."""


@dataclass
class _Tally:
    """Penalties, split into disagreement (evidence against) and doubt (information missing)."""

    penalty: float = 0.0
    doubt: float = 0.0
    pinpointed: bool = False
    reasons: list[str] = field(default_factory=list)

    def add(self, penalty: float, reason: str) -> None:
        self.penalty += penalty
        self.reasons.append(reason if penalty == 0 else f"{reason} (-{penalty:.2f})")

    def unknown(self, penalty: float, reason: str) -> None:
        self.doubt += penalty
        self.add(penalty, reason)


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres."""
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


def _check_kinds(p: _Features, c: _Features, t: _Tally) -> None:
    if p.deal and c.deal and p.deal != c.deal:
        raise _Veto(f"deal type {p.deal} vs {c.deal}")
    if p.ptype and c.ptype and p.ptype != c.ptype:
        raise _Veto(f"property type {p.ptype} vs {c.ptype}")
    if p.subtype and c.subtype:
        if p.subtype == c.subtype:
            t.add(0, f"subtype {p.subtype}")
        else:
            t.add(0.3, f"subtype {p.subtype} vs {c.subtype}")
    else:
        t.unknown(0.01, "subtype unknown on one side")


def _check_street(pa: ParsedAddress, ca: ParsedAddress, t: _Tally) -> None:
    relation = street_match(pa.street, ca.street)
    if relation is None:
        raise _Veto(f"street {pa.street!r} vs {ca.street!r}")
    if relation == "same":
        t.add(0, f"street {ca.street}")
    else:
        t.add(0.03, f"street {pa.street!r} ~ {ca.street!r}")
    if not street_types_compatible(pa.street_type, ca.street_type):
        t.add(0.08, f"street type {pa.street_type} vs {ca.street_type}")


def _check_building(pa: ParsedAddress, ca: ParsedAddress, t: _Tally) -> None:
    if pa.building is None or ca.building is None:
        t.unknown(0.25, "building number unknown on one side")
        return
    relation = building_match(pa.building, ca.building)
    if relation is None:
        raise _Veto(f"building {pa.building} vs {ca.building}")
    if relation == "same":
        t.add(0, f"building {ca.building}")
    else:
        t.add(0.08, f"building {pa.building} ~ {ca.building} (block on one side)")


def _check_flat(pa: ParsedAddress, ca: ParsedAddress, t: _Tally) -> None:
    if pa.flat and ca.flat:
        if pa.flat != ca.flat:
            raise _Veto(f"flat {pa.flat} vs {ca.flat}")
        t.add(0, f"flat {ca.flat}")
    elif pa.flat or ca.flat:
        side = "portal" if ca.flat else "CRM"
        t.unknown(0.05, f"flat {pa.flat or ca.flat} not stated on {side}")


def _coords_only_penalty(distance: float) -> float:
    if distance <= 30:
        return 0.04
    if distance <= 100:
        return 0.10
    return 0.25 if distance <= 300 else 0.5


def _coords_disagreement_penalty(distance: float) -> float:
    # Geocoding and hand-placed pins drift, so only a gross disagreement counts against.
    if distance <= 300:
        return 0.0
    return 0.1 if distance <= 1000 else 0.3


def _check_location(p: _Features, c: _Features, t: _Tally) -> None:
    pa, ca = p.address, c.address
    if pa.city and ca.city and not city_match(pa.city, ca.city):
        raise _Veto(f"city {pa.city} vs {ca.city}")
    _check_flat(pa, ca, t)
    by_address = bool(pa.street and ca.street)
    if by_address:
        _check_street(pa, ca, t)
        _check_building(pa, ca, t)
        # Both sides name the same unit: same building, and the same flat or none at all.
        t.pinpointed = pa.building == ca.building is not None and pa.flat == ca.flat
    if p.coords and c.coords:
        distance = haversine_m(p.coords, c.coords)
        if by_address:
            t.add(_coords_disagreement_penalty(distance), f"coordinates {distance:.0f} m apart")
        else:
            # Within a building's footprint the pin is doubt about the flat, beyond it evidence.
            record = t.unknown if distance <= 30 else t.add
            record(_coords_only_penalty(distance), f"located by coordinates only, {distance:.0f} m")
    elif not by_address:
        t.unknown(0.5, "no comparable address or coordinates")


def _price_tier(rel: float, exact: float) -> float:
    if rel <= exact:
        return 0.0
    if rel <= 0.03:
        return 0.02
    if rel <= 0.10:
        return 0.06
    return 0.15 if rel <= 0.25 else 0.3


def _check_price(p: _Features, c: _Features, t: _Tally, rates: Mapping[str, float]) -> None:
    if not p.amount or not c.amount:
        t.unknown(0.03, "price unknown on one side")
        return
    if p.period and c.period and p.period != c.period:
        t.add(0.2, f"pay period {p.period} vs {c.period}")
    label = f"price {p.amount:g} {p.currency} vs {c.amount:g} {c.currency}"
    if p.currency == c.currency or not (p.currency and c.currency):
        rel = abs(p.amount - c.amount) / max(p.amount, c.amount)
        t.add(_price_tier(rel, 0.005), label)
        return
    if p.currency not in rates or c.currency not in rates:
        t.unknown(0.2, f"{label}: no rate to compare")
        return
    pe, ce = p.amount * rates[p.currency], c.amount * rates[c.currency]
    rel = abs(pe - ce) / max(pe, ce)
    # Rates drift and hand conversions round, so the exact band is wider across currencies.
    t.unknown(0.02, "prices in different currencies")
    t.add(_price_tier(rel, 0.04), f"{label} (converted)")


def _check_rooms(p: _Features, c: _Features, t: _Tally) -> None:
    if p.rooms is None or c.rooms is None:
        t.unknown(0.02, "rooms unknown on one side")
        return
    diff = abs(p.rooms - c.rooms)
    penalty = 0.0 if diff == 0 else 0.1 if diff == 1 else 0.25
    t.add(penalty, f"rooms {p.rooms} vs {c.rooms}" if diff else f"rooms {c.rooms}")


def _check_area(p: _Features, c: _Features, t: _Tally) -> None:
    if not p.area or not c.area:
        t.unknown(0.02, "area unknown on one side")
        return
    rel = abs(p.area - c.area) / max(p.area, c.area)
    tiers = ((0.02, 0.0), (0.05, 0.02), (0.10, 0.05), (0.20, 0.12))
    penalty = next((pen for limit, pen in tiers if rel <= limit), 0.25)
    t.add(penalty, f"area {p.area:g} vs {c.area:g} m2")


def _check_floor(p: _Features, c: _Features, t: _Tally) -> None:
    if p.floor is None or c.floor is None:
        t.unknown(0.01, "floor unknown on one side")
    elif p.floor != c.floor:
        t.add(0.15, f"floor {p.floor} vs {c.floor}")
    else:
        t.add(0, f"floor {c.floor}")


def _score(p: _Features, c: _Features, rates: Mapping[str, float]) -> PairScore:
    tally = _Tally()
    try:
        _check_kinds(p, c, tally)
        _check_location(p, c, tally)
    except _Veto as veto:
        return PairScore(score=0.0, ceiling=0.0, pinpointed=False, reasons=(), veto=str(veto))
    _check_price(p, c, tally, rates)
    _check_rooms(p, c, tally)
    _check_area(p, c, tally)
    _check_floor(p, c, tally)
    score = round(max(0.0, 1.0 - tally.penalty), 4)
    ceiling = round(max(0.0, 1.0 - tally.penalty + tally.doubt), 4)
    return PairScore(score, ceiling, tally.pinpointed, tuple(tally.reasons))


def score_pair(
    portal_item: Mapping[str, Any],
    crm_listing: Mapping[str, Any],
    *,
    rates_to_eur: Mapping[str, float] = DEFAULT_RATES_TO_EUR,
) -> PairScore:
    """Judge one portal read-model item against one canonical CRM listing."""
    return _score(_portal_features(portal_item), _crm_features(crm_listing), rates_to_eur)


# --------------------------------------------------------------------------- assignment


def _sort_key(key: int | str) -> tuple[int, int | str]:
    """Numeric ids in numeric order, then anything else as text."""
    return (0, key) if isinstance(key, int) else (1, str(key))


def _split_linked(
    portal_items: Sequence[Mapping[str, Any]], crm_refs: set[str]
) -> tuple[list[Mapping[str, Any]], list[SkippedLink]]:
    open_items: list[Mapping[str, Any]] = []
    skipped: list[SkippedLink] = []
    seen: set[int | str] = set()
    for item in portal_items:
        if item.get("id") is None:
            raise ValueError("portal item without an 'id'")
        if item["id"] in seen:
            raise ValueError(f"duplicate portal id {item['id']!r}")
        seen.add(item["id"])
        ref = item.get("externalId")
        if ref:  # the portal's own test: a null or empty externalId means unlinked
            skipped.append(SkippedLink(item["id"], str(ref), str(ref) in crm_refs))
        else:
            open_items.append(item)
    skipped.sort(key=lambda s: _sort_key(s.portal_id))
    return open_items, skipped


def _crm_refs(crm_listings: Sequence[Mapping[str, Any]]) -> list[str]:
    refs: list[str] = []
    for listing in crm_listings:
        ref = listing.get("external_ref")
        if not ref:
            raise ValueError("CRM listing without an 'external_ref'")
        refs.append(str(ref))
    if len(set(refs)) != len(refs):
        raise ValueError("duplicate external_ref among CRM listings")
    return refs


def _score_all(
    portal: list[_Features], crm: list[_Features], rates: Mapping[str, float]
) -> dict[int | str, list[Candidate]]:
    """Every non-vetoed pair that is likely or still plausible, best first per portal item."""
    by_portal: dict[int | str, list[Candidate]] = {}
    for p in portal:
        found = []
        for c in crm:
            v = _score(p, c, rates)
            if v.veto is None and (v.score >= CANDIDATE_FLOOR or v.ceiling >= RIVAL_FLOOR):
                found.append(Candidate(str(c.key), v.score, v.ceiling, v.pinpointed, v.reasons))
        found.sort(key=lambda cand: (-cand.score, cand.external_ref))
        by_portal[p.key] = found
    return by_portal


def _rivals_by_crm(
    by_portal: Mapping[int | str, list[Candidate]],
) -> dict[str, list[tuple[int | str, Candidate]]]:
    """CRM ref -> every (portal id, candidate pair) that might be that CRM listing."""
    by_crm: dict[str, list[tuple[int | str, Candidate]]] = {}
    for pid, candidates in by_portal.items():
        for cand in candidates:
            by_crm.setdefault(cand.external_ref, []).append((pid, cand))
    return by_crm


def _crm_rival(best: Candidate, rival: Candidate) -> float:
    """How strongly another portal listing competes for the best candidate's CRM listing.

    When the best pair pinpoints the unit (street, building and flat all stated and equal), a
    vaguer portal listing cannot make it wrong: at most that one is a duplicate posting. Only
    an equally pinpointed portal listing then competes, by score. Otherwise any portal listing
    that could still fit competes, by ceiling.
    """
    if best.pinpointed:
        return rival.score if rival.pinpointed else 0.0
    return rival.ceiling


def _judge(
    pid: int | str,
    candidates: list[Candidate],
    by_crm: Mapping[str, list[tuple[int | str, Candidate]]],
    min_confidence: float,
    min_margin: float,
) -> str | None:
    """``None`` when the best candidate is a confident match, else why it is not.

    Runners-up are judged by their ceiling, not their score: a twin flat whose number or
    location is unknown is as much a rival as one that scores the same.
    """
    best = candidates[0]
    if best.score < min_confidence:
        return f"best score {best.score:.2f} below {min_confidence:.2f}"
    if len(candidates) > 1:
        runner = max(candidates[1:], key=lambda c: (c.ceiling, c.score))
        if best.score - runner.ceiling < min_margin:
            return f"{runner.external_ref} could fit as well (up to {runner.ceiling:.2f})"
    contenders = by_crm[best.external_ref]
    rivals = [(_crm_rival(best, c), other) for other, c in contenders if other != pid]
    if rivals:
        strength, other = max(rivals, key=lambda r: (r[0], _sort_key(r[1])))
        if best.score - strength < min_margin:
            return f"{best.external_ref} could be portal listing {other} (up to {strength:.2f})"
    return None


def match_listings(
    portal_items: list[dict[str, Any]],
    crm_listings: list[dict[str, Any]],
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    rates_to_eur: Mapping[str, float] = DEFAULT_RATES_TO_EUR,
) -> MatchReport:
    """Propose external-ID links from unlinked portal listings to CRM listings.

    Portal items with an ``externalId`` are reported in ``skipped_linked``, and CRM listings
    whose ``external_ref`` is linked on the portal are left out. ``unmatched_crm`` lists CRM
    listings that are neither matched nor a candidate of an ambiguous portal listing, i.e. the
    ones that are safe to create on the portal.
    """
    refs = _crm_refs(crm_listings)
    open_items, skipped = _split_linked(portal_items, set(refs))
    linked_refs = {s.external_ref for s in skipped}
    crm = [_crm_features(x) for x in crm_listings if str(x["external_ref"]) not in linked_refs]
    portal = sorted((_portal_features(x) for x in open_items), key=lambda f: _sort_key(f.key))
    by_portal = _score_all(portal, crm, rates_to_eur)
    by_crm = _rivals_by_crm(by_portal)

    matched: list[Match] = []
    ambiguous: list[Ambiguous] = []
    unmatched_portal: list[int | str] = []
    for p in portal:
        candidates = by_portal[p.key]
        if not candidates:
            unmatched_portal.append(p.key)
            continue
        why = _judge(p.key, candidates, by_crm, min_confidence, min_margin)
        if why is None:
            best = candidates[0]
            matched.append(Match(p.key, best.external_ref, best.score, best.reasons))
        else:
            ambiguous.append(Ambiguous(p.key, why, tuple(candidates[:MAX_CANDIDATES])))

    taken = {m.external_ref for m in matched}
    taken |= {c.external_ref for a in ambiguous for c in a.candidates}
    unmatched_crm = sorted(str(c.key) for c in crm if str(c.key) not in taken)
    return MatchReport(
        matched=tuple(matched),
        ambiguous=tuple(ambiguous),
        unmatched_portal=tuple(unmatched_portal),
        unmatched_crm=tuple(unmatched_crm),
        skipped_linked=tuple(skipped),
        min_confidence=min_confidence,
        min_margin=min_margin,
    )


# --------------------------------------------------------------------------- output

CSV_COLUMNS = ("status", "portal_id", "external_ref", "confidence", "rank", "reasons")


def _csv_rows(report: MatchReport) -> Iterable[tuple[Any, ...]]:
    for m in report.matched:
        reasons = "; ".join(m.reasons)
        yield ("matched", m.portal_id, m.external_ref, f"{m.confidence:.4f}", 1, reasons)
    for a in report.ambiguous:
        for rank, c in enumerate(a.candidates, start=1):
            reasons = "; ".join((a.why, *c.reasons))
            yield ("ambiguous", a.portal_id, c.external_ref, f"{c.score:.4f}", rank, reasons)
    for pid in report.unmatched_portal:
        yield ("unmatched_portal", pid, "", "", "", "")
    for ref in report.unmatched_crm:
        yield ("unmatched_crm", "", ref, "", "", "")
    for s in report.skipped_linked:
        note = "linked" if s.in_crm else "linked to a ref not in the CRM"
        yield ("skipped_linked", s.portal_id, s.external_ref, "", "", note)


def write_csv(report: MatchReport, path: str | Path) -> None:
    """One row per match, per ambiguous candidate and per unmatched or skipped listing."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_csv_rows(report))


def write_json(report: MatchReport, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")


def render_text(report: MatchReport, *, max_rows: int | None = None) -> str:
    """The summary followed by the matched and ambiguous listings, for a terminal."""
    lines = [report.summary(), "", "Matched:"]
    for m in report.matched[:max_rows]:
        lines.append(f"  #{m.portal_id} -> {m.external_ref}  {m.confidence:.2f}")
    lines.append("Ambiguous:")
    for a in report.ambiguous[:max_rows]:
        lines.append(f"  #{a.portal_id}: {a.why}")
        lines.extend(f"      {c.external_ref}  {c.score:.2f}" for c in a.candidates)
    if report.unmatched_portal:
        shown = ", ".join(f"#{pid}" for pid in report.unmatched_portal[:max_rows])
        lines.append(f"Unmatched portal: {shown}")
    if report.unmatched_crm:
        lines.append(f"Unmatched CRM: {', '.join(report.unmatched_crm[:max_rows])}")
    return "\n".join(lines)
