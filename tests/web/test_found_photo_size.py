"""Found by trying the page (helper webtest): the enrolment decodes an uploaded photo whatever its pixel size.
An 855 KB PNG of 30000x30000 pixels (one colour, compresses well) took the running daemon's peak RSS from 264 MB
to 5.48 GB and 33 s of CPU before "no face found"; on a Raspberry Pi with 2-4 GB that is the OOM killer for the
whole daemon (capture, recording, MQTT). The size is in the file's header: a photo larger than the doorbell can
use should be refused by its dimensions, with a message naming them, before it is decoded.

The photo here has the header of a 30000x30000 PNG and a truncated body, so the test itself never allocates."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from edge.vision.engine import FaceEngine

from .helpers import Site, csrf_of, setup_owner


def huge_png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # four rows of the picture, then the file stops
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows))


@pytest.mark.xfail(strict=True, reason="found: a photo's pixel size is not checked before it is decoded")
def test_a_photo_too_large_to_decode_is_refused_by_its_size(site: Site, tmp_path: Path) -> None:
    site.backend.engine = FaceEngine.load(model="int8", threads=1)
    client = site.client()
    setup_owner(site, client)
    page = client.get("/faces").text
    r = client.post("/faces/enrol", data={"csrf": csrf_of(page), "name": "Mallory", "consent_by": "Mallory",
                                          "consent_date": "2026-03-01", "consent": "yes"},
                    files=[("photo", ("big.png", huge_png_header(30000, 30000), "image/png"))])
    assert r.status_code == 400
    assert "30000x30000" in r.text, "the refusal does not say the photo is too large to use"
