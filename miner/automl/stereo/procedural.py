"""Procedural stereo pairs with exact ground truth: nothing to download, any size, seeded.

A scene is a background plane (slanted in x and y) and several foreground surfaces
(ellipses and rotated rectangles, each a plane with its own slant) at different depths.
Every surface carries a texture defined in left-image coordinates: random dots (blocky
noise) or a natural-looking ``1/f`` noise with colour and shading. Disparity of a surface
is affine, ``d(x, y) = a + b x + c y`` in left coordinates, larger is nearer.

Rendering is exact: a left pixel shows the nearest surface covering it; a right pixel
``x_r`` shows, for each surface, the left point ``x_l = (x_r + a + c y) / (1 - b)`` that
maps onto it and keeps the nearest covering one, its texture sampled at ``x_l`` (linear
in x). Occlusions follow from the z-order; the left disparity map is the true disparity
of the visible surface at every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StereoPair:
    """``left``/``right``: [3, H, W] float32 in [-1, 1]; ``disparity``: [H, W] float32."""

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray


@dataclass(frozen=True)
class SceneConfig:
    """Ranges of the generated scenes; disparities in pixels of the generated size."""

    height: int = 64
    width: int = 128
    min_disparity: float = 1.0
    max_disparity: float = 24.0
    min_objects: int = 2
    max_objects: int = 5
    max_slant: float = 0.08
    noise_std: float = 0.01


@dataclass(frozen=True)
class _Surface:
    a: float
    b: float
    c: float
    shape: str  # "plane", "ellipse" or "rect"
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    texture: np.ndarray  # [3, H, W + margin], sampled at x_l + margin_left


def _covers(s: _Surface, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if s.shape == "plane":
        return np.ones(np.broadcast(x, y).shape, dtype=bool)
    cos, sin = np.cos(s.angle), np.sin(s.angle)
    u = ((x - s.cx) * cos + (y - s.cy) * sin) / s.rx
    v = (-(x - s.cx) * sin + (y - s.cy) * cos) / s.ry
    if s.shape == "ellipse":
        return u * u + v * v <= 1.0
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def _noise_1f(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """Zero-mean unit-std noise with a ``1/f^beta`` spectrum, [h, w]."""
    spectrum = np.fft.rfft2(rng.standard_normal((h, w)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    img = np.fft.irfft2(spectrum / f**beta, s=(h, w))
    return ((img - img.mean()) / (img.std() + 1e-8)).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """[3, h, w] in about [-1, 1]: random dots or natural-looking noise, coloured."""
    if rng.random() < 0.5:
        cell = int(rng.integers(1, 4))
        dots = rng.random((h // cell + 1, w // cell + 1)) * 2 - 1
        lum = np.repeat(np.repeat(dots, cell, 0), cell, 1)[:h, :w].astype(np.float32)
    else:
        lum = 0.5 * _noise_1f(rng, h, w, float(rng.uniform(0.8, 1.6)))
        lum += 0.3 * np.linspace(-1, 1, w, dtype=np.float32)[None, :] * rng.uniform(-1, 1)
    colour = rng.uniform(-0.5, 0.5, size=(3, 1, 1)).astype(np.float32)
    tint = rng.uniform(0.6, 1.0, size=(3, 1, 1)).astype(np.float32)
    return np.clip(colour + tint * lum[None], -1.0, 1.0)


def _surface(rng: np.random.Generator, cfg: SceneConfig, d_lo: float, d_hi: float,
             shape: str, margin: int) -> _Surface:
    h, w = cfg.height, cfg.width
    b = rng.uniform(-cfg.max_slant, cfg.max_slant)
    c = rng.uniform(-cfg.max_slant, cfg.max_slant)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    # choose the offset so that the disparity at the centre lies in [d_lo, d_hi] and the
    # whole image stays inside [min, max]
    centre = rng.uniform(d_lo, d_hi)
    a = centre - b * cx - c * cy
    corners = [a + b * x + c * y for x in (0, w) for y in (0, h)]
    lo, hi = min(corners), max(corners)
    if lo < cfg.min_disparity or hi > cfg.max_disparity:
        b = c = 0.0
        a = centre
    return _Surface(
        a=a, b=b, c=c, shape=shape, cx=cx, cy=cy,
        rx=rng.uniform(0.1, 0.35) * w, ry=rng.uniform(0.15, 0.5) * h,
        angle=rng.uniform(0, np.pi),
        texture=_texture(rng, h, w + 2 * margin),
    )


def _scene(rng: np.random.Generator, cfg: SceneConfig, margin: int) -> list[_Surface]:
    """Background first, then objects sorted far to near."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    span = cfg.max_disparity - cfg.min_disparity
    levels = np.sort(rng.uniform(0.25, 1.0, size=n))
    surfaces = [_surface(rng, cfg, cfg.min_disparity, cfg.min_disparity + 0.4 * span,
                         "plane", margin)]
    for level in levels:
        centre = cfg.min_disparity + level * span
        shape = "ellipse" if rng.random() < 0.5 else "rect"
        surfaces.append(_surface(rng, cfg, max(cfg.min_disparity, centre - 0.1 * span),
                                 min(cfg.max_disparity, centre), shape, margin))
    return surfaces


def _sample_x(texture: np.ndarray, xs: np.ndarray, margin: int) -> np.ndarray:
    """Texture [3, H, Wt] at fractional columns ``xs`` [H, W] (left coordinates), linear."""
    wt = texture.shape[-1]
    pos = np.clip(xs + margin, 0, wt - 1.001)
    x0 = np.floor(pos).astype(np.int64)
    frac = (pos - x0).astype(np.float32)
    rows = np.arange(xs.shape[0])[:, None]
    return texture[:, rows, x0] * (1 - frac) + texture[:, rows, x0 + 1] * frac


def render_pair(cfg: SceneConfig, seed: int) -> StereoPair:
    """The pair for ``seed``: the same seed gives the same arrays on every machine."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x57E7E0]))
    h, w = cfg.height, cfg.width
    margin = int(np.ceil(cfg.max_disparity)) + 2
    surfaces = _scene(rng, cfg, margin)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    disparity = np.full((h, w), -np.inf)
    left = np.zeros((3, h, w), dtype=np.float32)
    right_d = np.full((h, w), -np.inf)
    right = np.zeros((3, h, w), dtype=np.float32)
    for s in surfaces:
        d_left = s.a + s.b * x + s.c * y
        show = _covers(s, x, y) & (d_left > disparity)
        disparity = np.where(show, d_left, disparity)
        left = np.where(show[None], s.texture[:, :, margin: margin + w], left)
        x_l = (x + s.a + s.c * y) / (1.0 - s.b)
        d_right = x_l - x
        show_r = _covers(s, x_l, y) & (d_right > right_d)
        right_d = np.where(show_r, d_right, right_d)
        right = np.where(show_r[None], _sample_x(s.texture, x_l, margin), right)
    if cfg.noise_std > 0:
        left = left + rng.normal(0, cfg.noise_std, left.shape).astype(np.float32)
        right = right + rng.normal(0, cfg.noise_std, right.shape).astype(np.float32)
    return StereoPair(np.clip(left, -1, 1).astype(np.float32),
                      np.clip(right, -1, 1).astype(np.float32),
                      disparity.astype(np.float32))


def render_batch(cfg: SceneConfig, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs stacked for the network: x [N, 6, H, W] (left, right), disparity [N, H, W]."""
    pairs = [render_pair(cfg, s) for s in seeds]
    x = np.stack([np.concatenate([p.left, p.right], 0) for p in pairs])
    return x, np.stack([p.disparity for p in pairs])
