"""PFM, PNG (stdlib), KITTI 2015, Middlebury and SceneFlow readers on files written here."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from miner.automl.errors import DatasetError
from miner.automl.stereo.formats import (
    image_to_array,
    read_kitti_disparity,
    read_kitti_pair,
    read_middlebury_pair,
    read_pfm,
    read_png,
    read_sceneflow_pair,
    write_kitti_disparity,
    write_pfm,
    write_png,
)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_with_filters(image: np.ndarray, filters: list[int]) -> bytes:
    """An independent PNG encoder that uses the given filter type per row (cycled)."""
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    size = image.dtype.itemsize
    bpp = channels * size
    rows = image.astype(f">u{size}").reshape(h, -1).view(np.uint8).astype(int)
    out = bytearray()
    prev = [0] * (w * bpp)
    for y in range(h):
        kind = filters[y % len(filters)]
        line = rows[y].tolist()
        enc = []
        for i, v in enumerate(line):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            enc.append((v - pred) & 0xFF)
        out += bytes([kind, *enc])
        prev = line
    colour = {1: 0, 3: 2, 4: 6}[channels]
    ihdr = struct.pack(">IIBBBBB", w, h, 8 * size, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(out))) + _chunk(b"IEND", b""))


def test_stereo_pfm_round_trip_and_byte_order(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5
    write_pfm(tmp_path / "a.pfm", data)
    assert np.array_equal(read_pfm(tmp_path / "a.pfm"), data)
    # big-endian, bottom row first, as some SceneFlow files are
    body = np.ascontiguousarray(data[::-1]).astype(">f4").tobytes()
    (tmp_path / "b.pfm").write_bytes(b"Pf\n4 3\n1.0\n" + body)
    assert np.array_equal(read_pfm(tmp_path / "b.pfm"), data)
    colour = np.random.default_rng(0).random((2, 3, 3)).astype(np.float32)
    write_pfm(tmp_path / "c.pfm", colour)
    assert np.array_equal(read_pfm(tmp_path / "c.pfm"), colour)
    (tmp_path / "d.pfm").write_bytes(b"P6\n4 3\n255\n")
    with pytest.raises(DatasetError):
        read_pfm(tmp_path / "d.pfm")
    (tmp_path / "e.pfm").write_bytes(b"Pf\n4 3\n-1.0\n" + b"\0" * 8)
    with pytest.raises(DatasetError, match="needs"):
        read_pfm(tmp_path / "e.pfm")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_stereo_png_round_trip(tmp_path: Path, dtype: type, channels: int) -> None:
    rng = np.random.default_rng(channels)
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    write_png(tmp_path / "x.png", image)
    back = read_png(tmp_path / "x.png")
    assert back.dtype == dtype and np.array_equal(back, image)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_stereo_png_reads_every_row_filter(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, np.iinfo(dtype).max, (10, 9, 3), endpoint=True).astype(dtype)
    (tmp_path / "f.png").write_bytes(png_with_filters(image, [0, 1, 2, 3, 4]))
    assert np.array_equal(read_png(tmp_path / "f.png"), image)


def test_stereo_png_errors(tmp_path: Path) -> None:
    (tmp_path / "no.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="not a PNG"):
        read_png(tmp_path / "no.png")
    with pytest.raises(DatasetError):
        write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))


def test_stereo_kitti_2015_layout(tmp_path: Path) -> None:
    root = tmp_path / "training"
    for sub in ("image_2", "image_3", "disp_occ_0"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(2)
    left = rng.integers(0, 255, (6, 10, 3), endpoint=True).astype(np.uint8)
    right = rng.integers(0, 255, (6, 10, 3), endpoint=True).astype(np.uint8)
    disparity = np.round(rng.uniform(0, 100, (6, 10)) * 256) / 256
    disparity[0, :3] = 0.0  # no ground truth there
    write_png(root / "image_2" / "000003_10.png", left)
    write_png(root / "image_3" / "000003_10.png", right)
    write_kitti_disparity(root / "disp_occ_0" / "000003_10.png", disparity)
    raw = read_png(root / "disp_occ_0" / "000003_10.png")
    assert raw.dtype == np.uint16 and int(raw[1, 1]) == round(disparity[1, 1] * 256)
    pair = read_kitti_pair(root, 3)
    assert np.allclose(pair.disparity, disparity, atol=1e-6)
    assert pair.left.shape == (3, 6, 10)
    assert np.allclose(pair.left, image_to_array(left))
    assert pair.left[0, 0, 0] == pytest.approx(left[0, 0, 0] / 255 * 2 - 1)
    write_png(tmp_path / "eight.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetError, match="16-bit"):
        read_kitti_disparity(tmp_path / "eight.png")


def test_stereo_middlebury_scene(tmp_path: Path) -> None:
    scene = tmp_path / "Adirondack"
    scene.mkdir()
    rng = np.random.default_rng(4)
    write_png(scene / "im0.png", rng.integers(0, 255, (4, 6, 3)).astype(np.uint8))
    write_png(scene / "im1.png", rng.integers(0, 255, (4, 6, 3)).astype(np.uint8))
    disparity = rng.uniform(1, 60, (4, 6)).astype(np.float32)
    disparity[2, 3] = np.inf
    write_pfm(scene / "disp0.pfm", disparity)
    (scene / "calib.txt").write_text(
        "cam0=[4161.221 0 1445.577; 0 4161.221 984.686; 0 0 1]\n"
        "cam1=[4161.221 0 1654.636; 0 4161.221 984.686; 0 0 1]\n"
        "doffs=209.059\nbaseline=176.252\nwidth=6\nheight=4\nndisp=64\nvmin=1\nvmax=60\n",
        encoding="ascii")
    pair, calib = read_middlebury_pair(scene)
    assert pair.disparity[2, 3] == 0.0
    assert np.allclose(np.delete(pair.disparity.ravel(), 15), np.delete(disparity.ravel(), 15))
    assert calib["ndisp"] == 64.0 and calib["baseline"] == pytest.approx(176.252)
    assert str(calib["cam0"]).startswith("[4161.221")


def test_stereo_sceneflow_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 65535, (4, 5)).astype(np.uint16)
    write_png(tmp_path / "l.png", grey)
    write_png(tmp_path / "r.png", grey)
    disparity = rng.uniform(0, 30, (4, 5)).astype(np.float32)
    write_pfm(tmp_path / "d.pfm", disparity)
    pair = read_sceneflow_pair(tmp_path / "l.png", tmp_path / "r.png", tmp_path / "d.pfm")
    assert pair.left.shape == (3, 4, 5)
    assert np.array_equal(pair.left[0], pair.left[2])  # grey repeated
    assert np.array_equal(pair.disparity, disparity)
