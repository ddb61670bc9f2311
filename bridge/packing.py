"""Compact storage of JSON the bridge keeps per listing: raw deflate with a preset dictionary.

A listing's canonical body (``lb:body:{ref}``) and a group-sync target's accepted records
(``lb:accepted:{target}:{group}``) are the bridge's largest per-listing state, and every one of
them repeats the same field names and values. Deflate primed with a dictionary of typical
listings (``DICTIONARY_V1``, fixed forever: stored values name it) keeps about a fifth of
them. The result is base64 behind a ``~1`` prefix, so it stays text (any Redis client reads
it, and the fenced script's JSON carries it) and is told apart from plain JSON, which starts
with ``{``: values written before packing existed, or by tests, read as they are.

Measured on the dev generator's listings (``python -m tests.bench.scale`` for the whole):
a 970-byte body packs to about 110 bytes in 15 µs, and unpacks in 3 µs; zlib without the
dictionary keeps about 55 % (and base64 adds a third).
"""

from __future__ import annotations

import base64
import zlib

PREFIX = b"~1"
_WBITS = 12  # a 4 KiB window: the dictionary fits, and priming and copying stay cheap
_MEM_LEVEL = 2

# Typical stored values (two accepted group-sync records, two canonical bodies). Never change
# it: a value packed with it can only be unpacked with it (a new one needs a new prefix).
DICTIONARY_V1 = (
    b'{"digest":"00000000000000000000000000000000","payload":{"ext'
    b'ernal_reference":"lst-000-003","unit_type":"apartment","bedr'
    b'ooms":3,"number_of_bathrooms":1.0,"description":"Renovated a'
    b'partment with a view over the park, close to transport, shop'
    b's and schools; available for a long-term lease.","image_urls'
    b'":["https://photos.example.com/lst-000-003/0.jpg","https://p'
    b'hotos.example.com/lst-000-003/1.jpg","https://photos.example'
    b'.com/lst-000-003/2.jpg","https://photos.example.com/lst-000-'
    b'003/3.jpg"],"listing_url":"https://agency.example.com/listin'
    b'gs/lst-000-003","move_in_date":"2026-12-01","amenities":["Gy'
    b'm","Parking"],"features":[],"is_furnished":true,"sqft":1259.'
    b'4,"address":{"address_line_1":"str. Vasile Alecsandri 21","a'
    b'ddress_line_2":"ap. 74","city":"Chi\xc8\x99in\xc4\x83u","state":"Chi\xc8\x99in'
    b'\xc4\x83u","postal_code":"MD-2048","country":"Moldova","latitude":'
    b'47.02626,"longitude":28.84376},"lease_terms":[{"length_in_mo'
    b'nths":12,"rent":630.0,"deposit":600.0}]},"at":1796000000000}'
    b'{"digest":"00000000000000000000000000000000","payload":{"ext'
    b'ernal_reference":"lst-000-017","unit_type":"apartment","bedr'
    b'ooms":1,"number_of_bathrooms":1.0,"description":"Renovated a'
    b'partment with a view over the park, close to transport, shop'
    b's and schools; available for a long-term lease.","image_urls'
    b'":["https://photos.example.com/lst-000-017/0.jpg","https://p'
    b'hotos.example.com/lst-000-017/1.jpg","https://photos.example'
    b'.com/lst-000-017/2.jpg","https://photos.example.com/lst-000-'
    b'017/3.jpg"],"listing_url":"https://agency.example.com/listin'
    b'gs/lst-000-017","move_in_date":"2026-12-01","amenities":["Ba'
    b'lcony","Elevator"],"features":["Floor heating"],"is_furnishe'
    b'd":true,"sqft":1022.6,"address":{"address_line_1":"str. Isma'
    b'il 112","address_line_2":"ap. 112","city":"Chi\xc8\x99in\xc4\x83u","stat'
    b'e":"Chi\xc8\x99in\xc4\x83u","postal_code":"MD-2034","country":"Moldova",'
    b'"latitude":47.04131,"longitude":28.81055},"lease_terms":[{"l'
    b'ength_in_months":12,"rent":270.0,"deposit":250.0}]},"at":179'
    b'6000000000}{"external_ref":"lst-000-005","version":1,"status'
    b'":"active","deal_type":"rent","property_type":"residential",'
    b'"property_subtype":"apartment","price":{"amount":1320.0,"cur'
    b'rency":"EUR","period":"monthly"},"deposit":350.0,"bedrooms":'
    b'3,"bathrooms":1.5,"rooms":4,"area_sqm":88.0,"floor":3,"floor'
    b's_total":16,"address":{"line1":"str. Bucuriei 16","line2":"a'
    b'p. 94","city":"Chi\xc8\x99in\xc4\x83u","state":"Chi\xc8\x99in\xc4\x83u","postal_code'
    b'":"MD-2099","country":"Moldova","lat":47.01548,"lng":28.8289'
    b'},"description":"Renovated apartment with a view over the pa'
    b'rk, close to transport, shops and schools; available for a l'
    b'ong-term lease.","photos":["https://photos.example.com/lst-0'
    b'00-005/0.jpg","https://photos.example.com/lst-000-005/1.jpg"'
    b',"https://photos.example.com/lst-000-005/2.jpg","https://pho'
    b'tos.example.com/lst-000-005/3.jpg"],"listing_url":"https://a'
    b'gency.example.com/listings/lst-000-005","available_from":"20'
    b'26-12-01","amenities":["Gym","Parking"],"features":[],"furni'
    b'shed":false}{"external_ref":"lst-001-003","version":1,"statu'
    b's":"active","deal_type":"rent","property_type":"residential"'
    b',"property_subtype":"studio_apartment","price":{"amount":500'
    b'.0,"currency":"EUR","period":"monthly"},"deposit":800.0,"bed'
    b'rooms":2,"bathrooms":1.5,"rooms":3,"area_sqm":39.0,"floor":1'
    b'2,"floors_total":16,"address":{"line1":"\xc8\x99os. H\xc3\xaence\xc8\x99ti 5",'
    b'"line2":"ap. 44","city":"Chi\xc8\x99in\xc4\x83u","state":"Chi\xc8\x99in\xc4\x83u","p'
    b'ostal_code":"MD-2080","country":"Moldova","lat":47.02293,"ln'
    b'g":28.83516},"description":"Renovated apartment with a view '
    b'over the park, close to transport, shops and schools; availa'
    b'ble for a long-term lease.","photos":["https://photos.exampl'
    b'e.com/lst-001-003/0.jpg","https://photos.example.com/lst-001'
    b'-003/1.jpg","https://photos.example.com/lst-001-003/2.jpg","'
    b'https://photos.example.com/lst-001-003/3.jpg"],"listing_url"'
    b':"https://agency.example.com/listings/lst-001-003","availabl'
    b'e_from":"2026-12-01","amenities":["Gym","Parking"],"features'
    b'":[],"furnished":true}'
)

_COMPRESSOR = zlib.compressobj(6, zlib.DEFLATED, -_WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY,
                               DICTIONARY_V1)
_DECOMPRESSOR = zlib.decompressobj(-_WBITS, DICTIONARY_V1)


def pack(raw: bytes) -> bytes:
    """``raw`` JSON as stored: packed (``~1`` + base64 of primed deflate)."""
    compressor = _COMPRESSOR.copy()  # primed once; a copy is cheaper than priming again
    return PREFIX + base64.b64encode(compressor.compress(raw) + compressor.flush())


def unpack(stored: bytes | str) -> bytes | str:
    """The JSON a stored value holds: unpacked if packed, else as it is."""
    if isinstance(stored, str):
        if not stored.startswith("~1"):
            return stored
        stored = stored.encode()
    elif not stored.startswith(PREFIX):
        return stored
    decompressor = _DECOMPRESSOR.copy()
    return decompressor.decompress(base64.b64decode(stored[2:])) + decompressor.flush()
