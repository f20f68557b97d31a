"""Photo files that claim a pixel size in their header without the pixels behind it (nothing large is ever
allocated by a test): what an attacker uploads to make a decoder take gigabytes."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (grey, 8 bit), then four rows of the picture, and the file stops."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG whose frame header (SOF0) is changed to say width x height."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "cv2 wrote no baseline frame header"
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)  # marker, length(2), precision(1), then H, W
    return bytes(data)
