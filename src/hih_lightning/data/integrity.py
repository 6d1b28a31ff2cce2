"""Is an image file whole? Structural checks that catch what OpenCV lets through.

OpenCV decodes a truncated JPEG without an error: libjpeg prints "Premature end of JPEG file"
to stderr and the missing rows come out grey, so a damaged download would train as a
half-grey face. A JPEG is whole when its marker segments and entropy-coded scans run, in
order, up to the end-of-image marker; a PNG when its chunks run up to IEND and every chunk's
CRC matches. Both checks read the bytes only (no decoding), so they cost a fraction of a
decode. Other formats are left to the decoder.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

JPEG_SIGNATURE = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_damage(data: bytes) -> str | None:
    n, pos = len(data), 2
    while True:
        if pos >= n:
            return "truncated JPEG (the file ends before its end-of-image marker)"
        if data[pos] != 0xFF:
            return f"corrupt JPEG (no marker at byte {pos})"
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            return "truncated JPEG (the file ends inside a marker)"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            continue
        if pos + 2 > n:
            return "truncated JPEG (the file ends inside a segment header)"
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            return f"corrupt JPEG (segment length {length} at byte {pos})"
        pos += length
        if pos > n:
            return f"truncated JPEG (segment 0xFF{marker:02X} runs past the end of the file)"
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return "truncated JPEG (image data ends before the end-of-image marker)"
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart
                    pos += 2
                elif following == 0xFF:  # fill byte
                    pos += 1
                else:
                    break


def _png_damage(data: bytes) -> str | None:
    n, pos = len(data), len(PNG_SIGNATURE)
    while True:
        if pos + 8 > n:
            return "truncated PNG (the file ends before its IEND chunk)"
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            return (f"truncated PNG (chunk {kind.decode('latin-1')!r} at byte {pos} runs past "
                    "the end of the file)")
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"corrupt PNG (CRC mismatch in chunk {kind.decode('latin-1')!r} at byte {pos})"
        if kind == b"IEND":
            return None
        pos = end


def image_damage(data: bytes) -> str | None:
    """Why the encoded JPEG/PNG ``data`` is truncated or corrupt; None if whole (or another
    format, which only its decoder can judge)."""
    if data.startswith(JPEG_SIGNATURE):
        return _jpeg_damage(data)
    if data.startswith(PNG_SIGNATURE):
        return _png_damage(data)
    return None


def image_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an image (missing, truncated, corrupt, not an image),
    or None. JPEG and PNG are checked structurally without decoding; other files are decoded."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "image missing"
    except OSError as err:
        return f"image unreadable ({err.strerror or err})"
    if data.startswith((JPEG_SIGNATURE, PNG_SIGNATURE)):
        return image_damage(data)
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        return "not an image OpenCV can decode"
    return None
