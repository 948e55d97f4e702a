"""Render a handheld phone sequence over a near-flat scene, with exact ground truth.

Scenes (lengths in mm, world frame as in :mod:`topograph.meso.functional.projection`: object plane
``z = 0``, x right, y down, heights positive toward the camera):

* ``cut_cards``: a textured flat background with six raised flat cards of known heights (the paper's
  Table-1 phantom); labels 0 (background) and 1..6 (cards).
* ``relief``: the same background with a smooth relief (Gaussian hills and a ridge); one label.
* ``dome``: the same background curved as one paraboloid cap over the whole scene (a curved specimen:
  height ``A (1 - r^2 / R^2)`` with ``R`` half the scene's diagonal, so the corners are at 0); one label.

Camera: pinhole with a realistic, non-polynomial radial distortion about an off-centre principal point;
a freehand path (serpentine lateral raster with ~70 % overlap, tilts of a few degrees, in-plane
rotations, height jitter). Each pixel is ray-traced exactly (ray marching plus bisection on the height
field, 2x2 supersampling), then vignetting, noise and JPEG compression are applied.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

_DIAG_35MM = math.hypot(36.0, 24.0)


@dataclass(frozen=True)
class MesoSynthConfig:
    """Parameters of a rendered phone sequence."""

    scene: Literal["cut_cards", "relief", "dome"] = "cut_cards"
    image_size: tuple[int, int] = (1000, 750)
    """``(width, height)`` in pixels."""
    raster: tuple[int, int] = (5, 3)
    """Columns and rows of the serpentine path; the number of images is their product."""
    overlap: float = 0.7
    """Overlap between neighbouring images along the raster."""
    focal_mm: float = 4.3
    """Effective focal length (written to EXIF)."""
    sensor_width_mm: float = 5.6
    """Sensor width; the pixel pitch is ``sensor_width_mm / width``."""
    working_distance_mm: float = 70.0
    """Nominal camera height ``Z_0`` above the object plane."""
    card_heights_gsd: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0)
    """Card heights in ground-sample distances (rounded to whole micrometres)."""
    relief_amplitude_gsd: float = 12.0
    """Peak height of the ``relief`` and ``dome`` scenes, GSD."""
    tilt_deg: float = 1.5
    """Standard deviation of each tilt component, degrees."""
    rotation_deg: float = 2.5
    """Standard deviation of the in-plane rotation, degrees."""
    height_jitter: float = 0.02
    """Standard deviation of the camera height, fraction of ``Z_0``."""
    position_jitter: float = 0.08
    """Standard deviation of the lateral position, fraction of the raster step."""
    distortion_scale: float = 1.0
    """Multiplies the distortion (0 = distortion-free camera)."""
    centre_offset: tuple[float, float] = (0.02, -0.015)
    """Principal point / distortion centre offset from the image centre, fraction of (width, height)."""
    noise_sigma: float = 0.01
    vignetting: float = 0.15
    """Relative brightness loss at the image corners."""
    jpeg_quality: int = 92
    supersample: int = 2
    seed: int = 0
    exposure_jitter: float = 0.0
    """Real-camera effects (0 / empty = none). Auto-exposure: each photo's gain is uniform in 1 +- this."""
    white_balance_jitter: float = 0.0
    """Auto white balance: each photo's per-channel gains are uniform in 1 +- this."""
    motion_blur_images: tuple[int, ...] = ()
    """Photos smeared by camera motion (indices) ..."""
    motion_blur_px: float = 7.0
    """... over this length, pixels, in a random direction."""
    rolling_shutter: float = 0.0
    """Rolling-shutter skew of a hand-held sweep: row ``v`` sees the scene shifted along the sweep's line (turned
    into each photo's axes by its in-plane angle) by this fraction of the image width times ``v / height - 1/2``
    (the sign follows the serpentine direction)."""
    specular: float = 0.0
    """Peak brightness of a specular highlight on a glossy disc of the scene (view-dependent: it sits at one
    place in the image, so it moves across the scene from photo to photo)."""


@dataclass(frozen=True)
class MesoSynthTruth:
    """Exact ground truth of a rendered sequence (lengths in mm unless named otherwise).

    Camera ``i``: nadir ``positions_mm[i]`` (X, Y), height ``heights_mm[i]``, object-plane normal in the
    camera frame ``normals[i]`` (n_x, n_y, n_z), in-plane angle ``angles_rad[i]``. The scene lives on a
    raster of spacing ``texel_mm`` whose pixel (0, 0) is centred at ``origin_mm``: ``height_mm`` (float32),
    ``labels`` (uint8), ``texture`` (float32 RGB). ``region_heights_um`` maps each label to its height.
    """

    focal_mm: float
    focal_px: float
    """Pinhole focal length ``f_ph`` in pixels (``f_ph = f_eff (1 + M_0)``)."""
    pixel_pitch_mm: float
    gsd_mm: float
    """Ground-sample distance at the nominal working distance."""
    image_size: tuple[int, int]
    distortion_centre_px: tuple[float, float]
    distortion_coeffs: tuple[float, float, float]
    """``(k1, k2, kw)`` of ``M(s) = 1 + k1 s^2 + k2 s^4 + kw s sin(3 pi s)``, ``s = r / r_norm``."""
    distortion_radius_norm_px: float
    positions_mm: np.ndarray
    heights_mm: np.ndarray
    normals: np.ndarray
    angles_rad: np.ndarray
    origin_mm: tuple[float, float]
    texel_mm: float
    height_mm: np.ndarray
    labels: np.ndarray
    region_heights_um: dict[int, float]
    region_names: dict[int, str]
    scene: str
    texture: np.ndarray | None = field(default=None, repr=False)
    rolling_px_per_row: np.ndarray | None = None
    """(N,) rolling-shutter skew of each photo along its sweep line, signed (None = a global shutter): raw row
    ``v`` sees the scene as the pinhole would at ``(u, v) + k_i (v - H / 2) d_i``, ``d_i`` the sweep line's
    direction in the photo's own axes (:meth:`rolling_shift_px_per_row`)."""

    def rolling_shift_px_per_row(self) -> np.ndarray:
        """(N, 2) rolling-shutter image motion of each photo, pixels per row: the skew ``k_i`` along the sweep's
        line (the world x axis) turned into the photo's axes, ``k_i (cos a_i, -sin a_i)`` (``a_i`` the in-plane
        angle). A phone moving along the line while rotated by ``a_i`` sees the scene move along the turned
        direction: a skew ``k cos a`` and a stretch ``-k sin a`` of the rows."""
        if self.rolling_px_per_row is None:
            return np.zeros((self.n_images, 2))
        a = self.angles_rad
        return self.rolling_px_per_row[:, None] * np.stack((np.cos(a), -np.sin(a)), axis=1)

    def readout_pixels(self, i: int, uv: np.ndarray) -> np.ndarray:
        """(P, 2) raw pixel coordinates ``uv`` of image ``i`` moved to the middle row's instant (the pose)."""
        if self.rolling_px_per_row is None:
            return uv
        out = np.array(uv, dtype=float, copy=True)
        out += self.rolling_shift_px_per_row()[i][None, :] * (out[:, 1:2] - 0.5 * self.image_size[1])
        return out

    @property
    def n_images(self) -> int:
        return int(self.positions_mm.shape[0])

    @property
    def magnifications(self) -> np.ndarray:
        """(N,) paraxial magnification ``f_ph / Z_i`` of each image."""
        return self.focal_px * self.pixel_pitch_mm / self.heights_mm

    def distortion_magnification(self, radius_px: np.ndarray) -> np.ndarray:
        """True undistortion magnification ``M(r)`` at distorted radii (pixels)."""
        k1, k2, kw = self.distortion_coeffs
        s = np.asarray(radius_px, dtype=float) / self.distortion_radius_norm_px
        return 1.0 + k1 * s**2 + k2 * s**4 + kw * s * np.sin(3.0 * np.pi * s)

    def undistort(self, uv: np.ndarray) -> np.ndarray:
        """(P, 2) raw pixel coordinates -> (P, 2) undistorted points relative to the principal point."""
        rel = np.asarray(uv, dtype=float) - np.asarray(self.distortion_centre_px)
        return rel * self.distortion_magnification(np.hypot(rel[:, 0], rel[:, 1]))[:, None]

    def flat_points_mm(self, i: int, uv: np.ndarray, plane_height_mm: float = 0.0) -> np.ndarray:
        """Where the rays of pixels ``uv`` (P, 2) of image ``i`` meet the plane of height ``plane_height_mm``."""
        d = _ray_directions(
            self.undistort(self.readout_pixels(i, uv)), self.normals[i], self.angles_rad[i], self.focal_px
        )  # (P, 3) world directions
        t = (self.heights_mm[i] - plane_height_mm) / d[:, 2]
        return self.positions_mm[i][None, :] + t[:, None] * d[:, :2]


def _rotation_from_normal(n: np.ndarray) -> np.ndarray:
    """3x3 rotation taking the unit normal ``n`` (camera frame) to the world z axis (stable form)."""
    nx, ny, nz = n
    a = np.array([ny, -nx, 0.0])
    ax = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return nz * np.eye(3) + ax + np.outer(a, a) / (1.0 + nz)


def _ray_directions(xy: np.ndarray, normal: np.ndarray, angle: float, focal_px: float) -> np.ndarray:
    """World directions (P, 3) of undistorted image points ``xy`` (P, 2): in-plane rotation, then the
    rotation taking the object-plane normal to the world z axis."""
    c, s = math.cos(angle), math.sin(angle)
    x = c * xy[:, 0] - s * xy[:, 1]
    y = s * xy[:, 0] + c * xy[:, 1]
    r = _rotation_from_normal(normal)
    return np.stack(
        (
            r[0, 0] * x + r[0, 1] * y + r[0, 2] * focal_px,
            r[1, 0] * x + r[1, 1] * y + r[1, 2] * focal_px,
            r[2, 0] * x + r[2, 1] * y + r[2, 2] * focal_px,
        ),
        axis=1,
    )


def _band_noise(rng: np.random.Generator, shape: tuple[int, int], sigmas: tuple[float, ...]) -> np.ndarray:
    import cv2

    out = np.zeros(shape, dtype=np.float32)
    for s in sigmas:
        n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), s)
        out += n / (n.std() + 1e-12) * (s**0.25)
    out -= out.mean()
    return out / (out.std() + 1e-12)


def _texture(rng: np.random.Generator, shape: tuple[int, int], base: np.ndarray, contrast: float) -> np.ndarray:
    sig = (0.8, 1.6, 3.2, 6.4, 12.8, 25.6)
    lum = _band_noise(rng, shape, sig)
    chroma = _band_noise(rng, shape, sig[2:])
    tex = np.empty((*shape, 3), dtype=np.float32)
    tint = np.array([0.6, -0.2, -0.5], dtype=np.float32)
    for c in range(3):
        tex[..., c] = base[c] + contrast * (lum + 0.35 * tint[c] * chroma)
    return np.clip(tex, 0.03, 0.97)


def _scene(cfg: MesoSynthConfig, gsd: float, extent: tuple[float, float, float, float], rng: np.random.Generator):
    """Height, labels and texture rasters (texel = 1 GSD) covering ``extent`` = (x0, y0, x1, y1) mm."""
    x0, y0, x1, y1 = extent
    texel = gsd
    w = int(math.ceil((x1 - x0) / texel)) + 1
    h = int(math.ceil((y1 - y0) / texel)) + 1
    xs = x0 + texel * np.arange(w)
    ys = y0 + texel * np.arange(h)
    xx, yy = np.meshgrid(xs, ys)
    texture = _texture(rng, (h, w), np.array([0.55, 0.5, 0.42], dtype=np.float32), 0.16)
    height = np.zeros((h, w), dtype=np.float32)
    labels = np.zeros((h, w), dtype=np.uint8)
    region_h: dict[int, float] = {0: 0.0}
    names: dict[int, str] = {0: "background"}
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    span_x, span_y = x1 - x0, y1 - y0
    if cfg.scene == "cut_cards":
        n_cards = len(cfg.card_heights_gsd)
        cols = math.ceil(n_cards / 2)
        side = 0.5 * min(span_x / (cols + 0.5), span_y / 2.5)
        order = rng.permutation(n_cards)
        for k in range(n_cards):
            r, c = divmod(int(order[k]), cols)
            ccx = cx + (c - (cols - 1) / 2) * span_x / (cols + 0.7) + rng.normal(0, 0.04 * side)
            ccy = cy + (r - 0.5) * span_y / 2.6 + rng.normal(0, 0.04 * side)
            ang = rng.uniform(-0.3, 0.3)
            sx = side * rng.uniform(0.85, 1.1)
            sy = side * rng.uniform(0.85, 1.1)
            u = (xx - ccx) * math.cos(ang) + (yy - ccy) * math.sin(ang)
            v = -(xx - ccx) * math.sin(ang) + (yy - ccy) * math.cos(ang)
            inside = (np.abs(u) <= sx / 2) & (np.abs(v) <= sy / 2)
            h_um = float(round(cfg.card_heights_gsd[k] * gsd * 1000.0))
            label = k + 1
            height[inside] = h_um / 1000.0
            labels[inside] = label
            region_h[label] = h_um
            names[label] = f"card{label}"
            base = rng.uniform(0.3, 0.8, size=3).astype(np.float32)
            rows, cols_ = np.nonzero(inside)
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols_.min(), cols_.max() + 1
            tex = _texture(rng, (int(r1 - r0), int(c1 - c0)), base, 0.14)
            sub = inside[r0:r1, c0:c1]
            texture[r0:r1, c0:c1][sub] = tex[sub]
    elif cfg.scene == "dome":
        radius_sq = 0.25 * (span_x**2 + span_y**2)
        rel = np.clip(1.0 - ((xx - cx) ** 2 + (yy - cy) ** 2) / radius_sq, 0.0, None)
        height = (cfg.relief_amplitude_gsd * gsd * rel).astype(np.float32)
        names[0] = "surface"
        region_h = {}
    else:
        amp = cfg.relief_amplitude_gsd * gsd
        rel = np.zeros((h, w))
        for _ in range(5):
            px, py = (
                rng.uniform(x0 + 0.2 * span_x, x1 - 0.2 * span_x),
                rng.uniform(y0 + 0.2 * span_y, y1 - 0.2 * span_y),
            )
            s = rng.uniform(0.06, 0.14) * span_x
            rel += rng.uniform(0.4, 1.0) * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * s * s))
        rel += 0.5 * np.exp(-((yy - cy - 0.1 * (xx - cx)) ** 2) / (2 * (0.05 * span_y) ** 2))
        height = (amp * rel / rel.max()).astype(np.float32)
        names[0] = "surface"
        region_h = {}
    return (x0, y0), texel, height, labels, texture, region_h, names


def _sample(raster: torch.Tensor, xy_tex: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample a (C, H, W) raster at (P, 2) texel coordinates -> (P, C) (border values outside)."""
    c, h, w = raster.shape
    g = torch.stack((xy_tex[:, 0] * (2.0 / (w - 1)) - 1.0, xy_tex[:, 1] * (2.0 / (h - 1)) - 1.0), dim=-1)
    out = F.grid_sample(raster[None], g.view(1, 1, -1, 2), mode=mode, padding_mode="border", align_corners=True)
    return out.view(c, -1).t()


def _height_bound(height: torch.Tensor, reach: int) -> torch.Tensor:
    """(1, H, W) maximum of ``height`` over a (2 reach + 1)^2 window (separable max pooling)."""
    k = 2 * reach + 1
    rows = F.max_pool2d(height[None], (1, k), stride=1, padding=(0, reach))
    return F.max_pool2d(rows, (k, 1), stride=1, padding=(reach, 0))[0]


def _trace(
    origin: np.ndarray,
    dirs: np.ndarray,
    height: torch.Tensor,
    bound: torch.Tensor,
    origin_mm: tuple[float, float],
    texel: float,
) -> torch.Tensor:
    """First intersection of rays with the height field (bounded ray marching + bisection).

    Each ray is marched (1-texel steps) only between the plane ``z = 0`` and the highest surface point
    within its horizontal reach (a max-pooled height map bounds it), then refined by bisection.

    Args:
        origin: (3,) camera centre (world, mm; z = -Z).
        dirs: (P, 3) world ray directions (z > 0).
        height: (1, H, W) heights (mm, >= 0) on the texel raster.
        bound: (1, H, W) :func:`_height_bound` of ``height`` over at least the rays' horizontal reach.
        origin_mm: world (x, y) of texel (0, 0).
        texel: raster spacing, mm.

    Returns:
        (P, 2) hit points (x, y) in texel coordinates.
    """
    d = torch.from_numpy(dirs).float()
    o = torch.from_numpy(origin).float()
    ox, oy = origin_mm
    z_cam = -float(origin[2])
    slope = torch.linalg.norm(d[:, :2], dim=1) / d[:, 2]

    def tex_of(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        p = o[None, :2] + t[:, None] * d[idx, :2]
        return torch.stack(((p[:, 0] - ox) / texel, (p[:, 1] - oy) / texel), dim=1)

    def gap(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        h = _sample(height, tex_of(t, idx))[:, 0]
        return (o[2] + t * d[idx, 2]) + h  # >= 0 once the ray is at or below the surface

    everyone = torch.arange(d.shape[0])
    t_bot = z_cam / d[:, 2]
    h_loc = _sample(bound, tex_of(t_bot, everyone))[:, 0]
    t_top = (z_cam - h_loc) / d[:, 2]
    hit_t = t_bot.clone()
    active = torch.nonzero(h_loc > 1e-9).squeeze(1)
    lo = t_top[active]
    hi = t_bot[active]
    steps = max(1, int(math.ceil(float((h_loc * slope).max()) / texel)))
    prev = lo.clone()
    found = torch.zeros_like(lo, dtype=torch.bool)
    for k in range(steps + 1):
        sel = torch.nonzero(~found).squeeze(1)
        if sel.numel() == 0:
            break
        t = t_top[active[sel]] + (t_bot[active[sel]] - t_top[active[sel]]) * (k / steps)
        hit = gap(t, active[sel]) >= 0
        hs = sel[hit]
        lo[hs] = prev[hs]
        hi[hs] = t[hit]
        found[hs] = True
        prev[sel] = t
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        below = gap(mid, active) >= 0
        hi = torch.where(below, mid, hi)
        lo = torch.where(below, lo, mid)
    hit_t[active] = hi
    return tex_of(hit_t, everyone)


def _path(cfg: MesoSynthConfig, gsd: float, rng: np.random.Generator):
    w, h = cfg.image_size
    cols, rows = cfg.raster
    step_x = (1.0 - cfg.overlap) * w * gsd
    step_y = (1.0 - cfg.overlap) * h * gsd
    pos = []
    for r in range(rows):
        cs = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)
        for c in cs:
            pos.append(((c - (cols - 1) / 2) * step_x, (r - (rows - 1) / 2) * step_y))
    pos = np.array(pos, dtype=float)
    n = len(pos)
    pos += rng.normal(0.0, cfg.position_jitter, size=(n, 2)) * np.array([step_x, step_y])
    z = cfg.working_distance_mm * (1.0 + cfg.height_jitter * rng.standard_normal(n))
    z[0] = cfg.working_distance_mm
    tilt = np.sin(np.radians(cfg.tilt_deg * rng.standard_normal((n, 2))))
    normals = np.column_stack((tilt, np.sqrt(1.0 - (tilt**2).sum(1))))
    angles = np.radians(cfg.rotation_deg * rng.standard_normal(n))
    return pos, z, normals, angles


def _encode_jpeg(rgb: np.ndarray, quality: int, exif: bytes | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": int(quality)}
    if exif is not None:
        kwargs["exif"] = exif
    Image.fromarray(rgb).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _exif_bytes(truth: MesoSynthTruth) -> bytes:
    from PIL import Image

    w, h = truth.image_size
    exif = Image.Exif()
    exif[0x010F] = "topograph"
    exif[0x0110] = "synthetic phone"
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A] = float(truth.focal_mm)  # FocalLength
    sensor_diag = truth.pixel_pitch_mm * math.hypot(w, h)
    ifd[0xA405] = int(round(truth.focal_mm * _DIAG_35MM / sensor_diag))  # FocalLengthIn35mmFilm
    ifd[0xA20E] = float(10.0 / truth.pixel_pitch_mm)  # FocalPlaneXResolution, pixels per cm
    ifd[0xA20F] = float(10.0 / truth.pixel_pitch_mm)
    ifd[0xA210] = 3  # centimetres
    ifd[0xA002] = int(w)
    ifd[0xA003] = int(h)
    return exif.tobytes()


@dataclass(frozen=True)
class MesoSynthData:
    """A rendered sequence: ``images`` (N, H, W, 3) uint8 (after JPEG), ``jpeg`` the encoded files
    (with EXIF), ``names`` and the ``truth``."""

    images: np.ndarray
    jpeg: tuple[bytes, ...]
    names: tuple[str, ...]
    truth: MesoSynthTruth
    config: MesoSynthConfig


def make_meso_truth(cfg: MesoSynthConfig = MesoSynthConfig()) -> MesoSynthTruth:
    """The scene, camera path and camera model of a sequence, without rendering (deterministic).

    Args:
        cfg: scene, camera and path parameters.

    Returns:
        The ground truth that :func:`render_meso_sequence` renders.
    """
    rng = np.random.default_rng(cfg.seed)
    w, h = cfg.image_size
    pitch = cfg.sensor_width_mm / w
    z0 = cfg.working_distance_mm
    f_ph = cfg.focal_mm * z0 / (z0 - cfg.focal_mm)  # thin lens, Eq. 1
    f_px = f_ph / pitch
    gsd = z0 * pitch / f_ph
    pos, zs, normals, angles = _path(cfg, gsd, rng)
    half = np.array([0.5 * w, 0.5 * h]) * gsd * 1.25
    margin = float(zs.max() * np.abs(normals[:, :2]).max() + 0.05 * w * gsd)
    lo = pos.min(0) - half - margin
    hi = pos.max(0) + half + margin
    origin, texel, height, labels, texture, region_h, names = _scene(cfg, gsd, (lo[0], lo[1], hi[0], hi[1]), rng)
    s = cfg.distortion_scale
    return MesoSynthTruth(
        focal_mm=cfg.focal_mm,
        focal_px=float(f_px),
        pixel_pitch_mm=float(pitch),
        gsd_mm=float(gsd),
        image_size=(w, h),
        distortion_centre_px=((w - 1) / 2 + cfg.centre_offset[0] * w, (h - 1) / 2 + cfg.centre_offset[1] * h),
        distortion_coeffs=(0.030 * s, -0.012 * s, 0.004 * s),
        distortion_radius_norm_px=0.5 * math.hypot(w, h),
        positions_mm=pos,
        heights_mm=zs,
        normals=normals,
        angles_rad=angles,
        origin_mm=(float(origin[0]), float(origin[1])),
        texel_mm=float(texel),
        height_mm=height,
        labels=labels,
        region_heights_um=region_h,
        region_names=names,
        scene=cfg.scene,
        texture=texture,
        rolling_px_per_row=_rolling_skew(cfg),
    )


def _rolling_skew(cfg: MesoSynthConfig) -> np.ndarray | None:
    """(N,) rolling-shutter skew, pixels per row: ``rolling_shutter`` x width over the frame's height, its
    sign the sweep's (the serpentine path runs every other raster row backwards)."""
    if not cfg.rolling_shutter:
        return None
    cols, rows = cfg.raster
    w, h = cfg.image_size
    sweep = np.where((np.arange(cols * rows) // cols) % 2 == 0, 1.0, -1.0)
    return sweep * cfg.rolling_shutter * w / h


def _highlight(uv: np.ndarray, hits: np.ndarray, truth: MesoSynthTruth, cfg: MesoSynthConfig) -> np.ndarray:
    """Specular highlight: a Gaussian spot at a fixed image position, only on a glossy disc of the scene."""
    w, h = cfg.image_size
    spot = np.exp(-(((uv[:, 0] - 0.6 * w) ** 2 + (uv[:, 1] - 0.4 * h) ** 2) / (2.0 * (0.12 * w) ** 2)))
    extent = np.array(truth.height_mm.shape[::-1], float) * truth.texel_mm
    centre = np.array(truth.origin_mm) + 0.5 * extent
    xy = np.array(truth.origin_mm) + hits[:, :2] * truth.texel_mm
    glossy = np.hypot(*(xy - centre).T) < 0.2 * float(extent.min())
    return (cfg.specular * spot * glossy).astype(np.float32)


def _camera_effects(rgb: np.ndarray, i: int, cfg: MesoSynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Auto exposure and white balance (per-photo gains) and motion blur of the listed photos."""
    import cv2

    gain = 1.0 + rng.uniform(-cfg.exposure_jitter, cfg.exposure_jitter)
    wb = 1.0 + rng.uniform(-cfg.white_balance_jitter, cfg.white_balance_jitter, 3)
    direction = rng.uniform(0.0, np.pi)
    out = rgb * gain * wb
    if i in cfg.motion_blur_images and cfg.motion_blur_px > 1:
        k = int(math.ceil(cfg.motion_blur_px)) | 1
        kernel = np.zeros((k, k), np.float32)
        c = k // 2
        for t in np.linspace(-0.5, 0.5, 4 * k):
            x, y = c + t * cfg.motion_blur_px * math.cos(direction), c + t * cfg.motion_blur_px * math.sin(direction)
            kernel[int(round(y)), int(round(x))] += 1.0
        out = cv2.filter2D(out.astype(np.float32), -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    return out


def render_meso_sequence(cfg: MesoSynthConfig = MesoSynthConfig()) -> MesoSynthData:
    """Render a phone sequence with exact ground truth (deterministic for a given ``cfg.seed``).

    Args:
        cfg: scene, camera, path and degradation parameters.

    Returns:
        The images (JPEG-compressed, decoded), their encoded bytes with EXIF and the truth.
    """
    from PIL import Image

    truth = make_meso_truth(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    w, h = cfg.image_size
    pos, zs, normals, angles = truth.positions_mm, truth.heights_mm, truth.normals, truth.angles_rad
    f_px, texel, height, texture = truth.focal_px, truth.texel_mm, truth.height_mm, truth.texture
    assert texture is not None
    ss = max(1, int(cfg.supersample))
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    us = (np.arange(w)[:, None] + sub[None, :]).reshape(-1)
    vs = (np.arange(h)[:, None] + sub[None, :]).reshape(-1)
    uu, vv = np.meshgrid(us, vs)
    uv = np.stack((uu.reshape(-1), vv.reshape(-1)), axis=1)
    xy_u = truth.undistort(uv)
    hr = torch.from_numpy(height)[None]
    tex = torch.from_numpy(texture).permute(2, 0, 1).contiguous()
    rc = np.hypot(uv[:, 0] - (w - 1) / 2, uv[:, 1] - (h - 1) / 2) / (0.5 * math.hypot(w, h))
    vignette = (1.0 - cfg.vignetting * rc**2).reshape(h * ss, w * ss)
    exif = _exif_bytes(truth)
    corner_slope = float(np.hypot(*np.abs(xy_u).max(0))) / f_px + float(np.abs(normals[:, :2]).max()) * 2.0
    bound = _height_bound(hr, int(math.ceil(float(hr.max()) * corner_slope / texel)) + 2)
    images, jpegs = [], []
    effects = np.random.default_rng([cfg.seed, 2])  # its own stream: the clean sequence is unchanged
    for i in range(len(pos)):
        xy_i = truth.undistort(truth.readout_pixels(i, uv)) if cfg.rolling_shutter else xy_u
        dirs = _ray_directions(xy_i, normals[i], angles[i], f_px)
        hits = _trace(np.array([pos[i, 0], pos[i, 1], -zs[i]]), dirs, hr, bound, truth.origin_mm, texel)
        rgb = _sample(tex, hits).numpy().reshape(h * ss, w * ss, 3)
        if cfg.specular:
            rgb = rgb + _highlight(uv, hits.numpy(), truth, cfg).reshape(h * ss, w * ss, 1)
        rgb = rgb * vignette[..., None]
        rgb = rgb.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
        rgb = _camera_effects(rgb, i, cfg, effects)
        rgb = rgb + rng.normal(0.0, cfg.noise_sigma, rgb.shape)
        u8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        data = _encode_jpeg(u8, cfg.jpeg_quality, exif)
        jpegs.append(data)
        images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    names_out = tuple(f"IMG_{i:03d}.jpg" for i in range(len(pos)))
    return MesoSynthData(images=np.stack(images), jpeg=tuple(jpegs), names=names_out, truth=truth, config=cfg)


def write_meso_dataset(data: MesoSynthData, out_dir: str | Path) -> Path:
    """Write a rendered sequence and its truth to ``out_dir`` (layout in docs/ground-truth.md).

    ``images/IMG_###.jpg`` (JPEG with EXIF focal length, 35 mm equivalent and focal-plane resolution) and
    ``truth/``: ``labels.png`` (uint8 region labels), ``ortho.png`` (the true orthophoto on the same
    raster), ``regions.csv`` (label, name, height_um),
    ``height_um.tif`` (float32 true height map), ``poses.csv``, ``distortion.csv`` and ``truth.json``
    (everything else: GSD, focal lengths, pitch, raster origin and spacing, distortion model, config).

    Returns:
        ``out_dir``.
    """
    import cv2
    import tifffile

    from topograph.io.atomic import atomic_path, write_json, write_text

    out = Path(out_dir)
    t = data.truth
    for name, blob in zip(data.names, data.jpeg, strict=True):
        with atomic_path(out / "images" / name) as tmp:
            tmp.write_bytes(blob)
    tdir = out / "truth"
    with atomic_path(tdir / "labels.png") as tmp:
        cv2.imwrite(str(tmp), t.labels)
    if t.texture is not None:
        ortho = np.clip(np.round(t.texture * 255.0), 0, 255).astype(np.uint8)
        with atomic_path(tdir / "ortho.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(ortho, cv2.COLOR_RGB2BGR))
    res = 10.0 / t.texel_mm  # pixels per cm
    with atomic_path(tdir / "height_um.tif") as tmp:
        tifffile.imwrite(
            tmp,
            (t.height_mm * 1000.0).astype(np.float32),
            resolution=(res, res),
            resolutionunit="CENTIMETER",
            description=json.dumps({"unit": "um", "pixel_size_mm": t.texel_mm, "origin_mm": list(t.origin_mm)}),
            metadata=None,
        )
    rows = [["label", "name", "height_um"]] + [
        [k, t.region_names[k], f"{v:.1f}"] for k, v in sorted(t.region_heights_um.items())
    ]
    write_text(tdir / "regions.csv", _csv(rows))
    pose_rows = [["image", "x_mm", "y_mm", "z_mm", "n_x", "n_y", "n_z", "angle_deg", "magnification"]]
    for i, name in enumerate(data.names):
        pose_rows.append(
            [name, *(f"{v:.6f}" for v in (*t.positions_mm[i], t.heights_mm[i], *t.normals[i]))]
            + [f"{math.degrees(t.angles_rad[i]):.6f}", f"{t.magnifications[i]:.8f}"]
        )
    write_text(tdir / "poses.csv", _csv(pose_rows))
    r = np.linspace(0.0, 1.15 * t.distortion_radius_norm_px, 101)
    dist_rows = [["radius_px", "magnification"]] + [
        [f"{a:.3f}", f"{b:.8f}"] for a, b in zip(r, t.distortion_magnification(r), strict=True)
    ]
    write_text(tdir / "distortion.csv", _csv(dist_rows))
    meta = {
        "scene": t.scene,
        "n_images": t.n_images,
        "image_size": list(t.image_size),
        "gsd_mm": t.gsd_mm,
        "focal_mm": t.focal_mm,
        "focal_px": t.focal_px,
        "pixel_pitch_mm": t.pixel_pitch_mm,
        "magnification_image0": float(t.magnifications[0]),
        "distortion": {
            "model": "M(s) = 1 + k1 s^2 + k2 s^4 + kw s sin(3 pi s), s = r / r_norm; r_u = M(r_d) r_d",
            "centre_px": list(t.distortion_centre_px),
            "coefficients": list(t.distortion_coeffs),
            "radius_norm_px": t.distortion_radius_norm_px,
        },
        "raster": {"origin_mm": list(t.origin_mm), "pixel_size_mm": t.texel_mm, "shape": list(t.labels.shape)},
        "region_heights_um": {str(k): v for k, v in t.region_heights_um.items()},
        "region_names": {str(k): v for k, v in t.region_names.items()},
        "frame": "object plane z=0; x right, y down (mm); heights positive toward the camera",
        "config": asdict(data.config),
    }
    write_json(tdir / "truth.json", meta)
    return out


def _csv(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
