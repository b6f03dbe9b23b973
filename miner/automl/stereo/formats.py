"""Readers (and writers, for tests and exports) of the standard stereo formats.

- PFM (SceneFlow disparities, Middlebury ``disp0.pfm``): ``PF``/``Pf`` header, size,
  scale whose sign gives the byte order, float32 rows stored bottom to top.
- PNG, read and written with the standard library (zlib + struct): 8- or 16-bit grey, RGB
  or RGBA, all five row filters; KITTI stores disparity as 16-bit grey, ``value / 256``,
  0 meaning "no ground truth".
- KITTI 2015 (``image_2``, ``image_3``, ``disp_occ_0`` under ``training``) and Middlebury
  (a scene folder with ``im0.png``, ``im1.png``, ``disp0.pfm``, ``calib.txt``).

Every reader returns disparity as float32 [H, W] with invalid pixels set to 0 (so the
metrics' ``0 < d < max`` mask drops them), and images as float32 [3, H, W] in [-1, 1].
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np

from miner.automl.errors import DatasetError
from miner.automl.stereo.procedural import StereoPair

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


# --- PFM ------------------------------------------------------------------------------------


def write_pfm(path: Path, data: np.ndarray) -> None:
    """Write [H, W] (or [H, W, 3]) float32 as little-endian PFM."""
    data = np.asarray(data, dtype="<f4")
    colour = data.ndim == 3
    header = f"{'PF' if colour else 'Pf'}\n{data.shape[1]} {data.shape[0]}\n-1.0\n"
    path.write_bytes(header.encode("ascii") + np.ascontiguousarray(data[::-1]).tobytes())


def read_pfm(path: Path) -> np.ndarray:
    """[H, W] or [H, W, 3] float32, top row first."""
    raw = Path(path).read_bytes()
    match = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s", raw)
    if match is None:
        raise DatasetError(name=str(path), detail="not a PFM file (bad header)")
    colour = match.group(1) == b"PF"
    w, h, scale = int(match.group(2)), int(match.group(3)), float(match.group(4))
    dtype = "<f4" if scale < 0 else ">f4"
    shape = (h, w, 3) if colour else (h, w)
    body = raw[match.end():]
    count = int(np.prod(shape))
    if len(body) < 4 * count:
        raise DatasetError(name=str(path), detail=f"PFM body holds {len(body)} bytes, needs "
                                                  f"{4 * count}")
    data = np.frombuffer(body, dtype=dtype, count=count).reshape(shape)
    return np.ascontiguousarray(data[::-1]).astype(np.float32)


# --- PNG ------------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def write_png(path: Path, image: np.ndarray) -> None:
    """Write uint8 or uint16 [H, W] (grey) or [H, W, 3|4] (RGB/RGBA), filter 0."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(name=str(path), detail=f"PNG needs uint8/uint16, got {image.dtype}")
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    depth = 8 * image.dtype.itemsize
    rows = image.astype(f">u{image.dtype.itemsize}").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], 1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    path.write_bytes(_PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))


def _unfilter(data: bytes, h: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters; returns [h, stride] uint8."""
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    pos = 0
    for row in range(h):
        kind = data[pos]
        line = np.frombuffer(data, np.uint8, stride, pos + 1).astype(np.int32)
        pos += stride + 1
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        elif kind == 1:  # Sub: running sum per byte lane, a cumsum
            lanes = np.zeros(stride + (-stride) % bpp, np.int32)
            lanes[:stride] = line
            cur = (np.cumsum(lanes.reshape(-1, bpp), 0).reshape(-1)[:stride]) & 0xFF
        elif kind in (3, 4):
            cur = _unfilter_sequential(line, prev, bpp, kind)
        else:
            raise DatasetError(name="png", detail=f"unknown row filter {kind}")
        out[row] = cur
        prev = cur.astype(np.int32)
    return out


def _unfilter_sequential(line: np.ndarray, prev: np.ndarray, bpp: int, kind: int) -> np.ndarray:
    cur = [0] * len(line)
    up = prev.tolist()
    raw = line.tolist()
    for i, value in enumerate(raw):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (value + ((a + b) >> 1)) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (value + pred) & 0xFF
    return np.asarray(cur, dtype=np.int32)


def read_png(path: Path) -> np.ndarray:
    """uint8/uint16 [H, W] or [H, W, C] from a non-interlaced, non-palette PNG."""
    raw = Path(path).read_bytes()
    if not raw.startswith(_PNG_MAGIC):
        raise DatasetError(name=str(path), detail="not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[pos: pos + 8])
        body = raw[pos + 8: pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise DatasetError(name=str(path), detail="PNG without IHDR")
    w, h, depth, colour_type, _, _, interlace = header
    if colour_type not in _CHANNELS or depth not in (8, 16) or interlace:
        raise DatasetError(name=str(path), detail=f"unsupported PNG depth={depth} "
                                                  f"colour={colour_type} interlace={interlace}")
    channels = _CHANNELS[colour_type]
    bpp = channels * depth // 8
    try:
        data = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DatasetError(name=str(path), detail=f"corrupt PNG data: {exc}") from exc
    rows = _unfilter(data, h, w * bpp, bpp)
    pixels = rows.view(">u2").astype(np.uint16) if depth == 16 else rows
    return pixels.reshape(h, w) if channels == 1 else pixels.reshape(h, w, channels)


# --- datasets -------------------------------------------------------------------------------


def image_to_array(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16 [H, W(, C)] -> float32 [3, H, W] in [-1, 1] (grey repeated, alpha dropped)."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    img = pixels.astype(np.float32) / scale * 2.0 - 1.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, 2)
    return np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1))


def read_kitti_disparity(path: Path) -> np.ndarray:
    """KITTI 2015 disparity PNG -> float32 [H, W] pixels; 0 where there is no ground truth."""
    pixels = read_png(path)
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise DatasetError(name=str(path), detail="KITTI disparity must be 16-bit grey")
    return pixels.astype(np.float32) / 256.0


def write_kitti_disparity(path: Path, disparity: np.ndarray) -> None:
    write_png(path, np.clip(np.round(disparity * 256.0), 0, 65535).astype(np.uint16))


def read_kitti_pair(root: Path, index: int, occluded: bool = True) -> StereoPair:
    """Frame ``index`` of a KITTI 2015 ``training`` folder (``{index:06d}_10.png``)."""
    name = f"{index:06d}_10.png"
    disp_dir = "disp_occ_0" if occluded else "disp_noc_0"
    return StereoPair(
        image_to_array(read_png(root / "image_2" / name)),
        image_to_array(read_png(root / "image_3" / name)),
        read_kitti_disparity(root / disp_dir / name),
    )


def read_middlebury_calib(path: Path) -> dict[str, float | str]:
    """``calib.txt`` as a dict; numeric fields (ndisp, baseline, doffs, ...) as floats."""
    out: dict[str, float | str] = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def read_middlebury_pair(scene: Path) -> tuple[StereoPair, dict[str, float | str]]:
    """A Middlebury 2014-style scene folder; infinite disparities (unknown) become 0."""
    disparity = read_pfm(scene / "disp0.pfm")
    disparity = np.where(np.isfinite(disparity), disparity, 0.0).astype(np.float32)
    pair = StereoPair(image_to_array(read_png(scene / "im0.png")),
                      image_to_array(read_png(scene / "im1.png")), disparity)
    return pair, read_middlebury_calib(scene / "calib.txt")


def read_sceneflow_pair(left: Path, right: Path, disparity: Path) -> StereoPair:
    """A SceneFlow sample: two PNG frames and the left PFM disparity."""
    return StereoPair(image_to_array(read_png(left)), image_to_array(read_png(right)),
                      read_pfm(disparity))
