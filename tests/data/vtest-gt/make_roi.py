"""Writes roi.png, the region of vtest.avi (768x576) the ground truth labels: x 250-767, y 80-429
(the open ground; the far left and the lawn at the bottom are left out). A box counts when its
foot point (bottom centre) falls inside. Run from this folder: python3 make_roi.py"""
import struct
import zlib

W, H, X0, Y0, Y1 = 768, 576, 250, 80, 430


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


inside = b"\0" + bytes(255 if X0 <= x else 0 for x in range(W))
outside = b"\0" + bytes(W)
pixels = b"".join(inside if Y0 <= y < Y1 else outside for y in range(H))
with open("roi.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 0, 0, 0, 0)))
    f.write(chunk(b"IDAT", zlib.compress(pixels, 9)))
    f.write(chunk(b"IEND", b""))
