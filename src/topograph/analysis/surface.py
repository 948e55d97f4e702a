"""Areal surface texture parameters in the style of ISO 25178-2 on a height map, after form removal.

The height map and its pixel size must share one length unit (µm by convention) for Sdr to be meaningful.
No S-filter / L-filter (ISO 16610) is applied beyond the polynomial form removal (F-operator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from topograph.errors import TopographError

log = logging.getLogger("topograph")

FORM_DEGREES = {"none": 0, "plane": 1, "poly2": 2, "poly3": 3}
"""Form-removal methods and the total degree of the bivariate polynomial they subtract ("none" removes the mean)."""

_ROWS_PER_BLOCK = 256

_UNIT_KIND = {"sa": 1, "sq": 1, "sp": 1, "sv": 1, "sz": 1, "ssk": 0, "sku": 0, "sdr_percent": -1}
"""1: height unit, 0: dimensionless, -1: percent."""


def remove_form(
    height: np.ndarray,
    pixel_size: float,
    method: str = "plane",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Subtract the least-squares form from a height map.

    Fits z ≈ Σ_{i+j ≤ p} c_ij u^i v^j on the valid pixels (finite and ``mask``), with u, v the pixel
    coordinates x = col·pixel_size, y = row·pixel_size scaled to [−1, 1] for conditioning, and p = 1
    ("plane"), 2 ("poly2"), 3 ("poly3"); "none" subtracts the mean only. The fit uses the normal
    equations accumulated over row blocks, so memory stays small for large maps.

    Args:
        height: (H, W) heights, NaN = unknown.
        pixel_size: grid spacing (> 0), any unit (the fit is scale-free; kept for a uniform signature).
        method: "plane", "poly2", "poly3" or "none".
        mask: optional (H, W) bool, True for pixels used in the fit.

    Returns:
        (H, W) float64 residual heights (form subtracted wherever ``height`` is finite; NaN elsewhere).

    Raises:
        TopographError: unknown method, bad shape, no valid pixel or fewer valid pixels than coefficients.
    """
    if method not in FORM_DEGREES:
        raise TopographError(f"unknown form removal '{method}'", f"use one of: {', '.join(FORM_DEGREES)}")
    z = np.asarray(height, dtype=float)
    valid = _valid_pixels(z, pixel_size, mask)
    degree = FORM_DEGREES[method]
    terms = [(i, d - i) for d in range(degree + 1) for i in range(d, -1, -1)]
    n_valid = int(valid.sum())
    if n_valid < len(terms):
        raise TopographError(
            f"only {n_valid} valid pixels for a {method} form with {len(terms)} coefficients",
            "use a simpler --form or a larger height map",
        )
    h, w = z.shape
    u_all = _scaled(np.arange(w), w)
    v_all = _scaled(np.arange(h), h)
    ata = np.zeros((len(terms), len(terms)))
    atz = np.zeros(len(terms))
    for r0 in range(0, h, _ROWS_PER_BLOCK):
        rr, cc = np.nonzero(valid[r0 : r0 + _ROWS_PER_BLOCK])
        a = _design(u_all[cc], v_all[rr + r0], terms)
        ata += a.T @ a
        atz += a.T @ z[rr + r0, cc]
    coef = np.linalg.lstsq(ata, atz, rcond=None)[0]
    out = np.full_like(z, np.nan)
    finite = np.isfinite(z)
    for r0 in range(0, h, _ROWS_PER_BLOCK):
        rr, cc = np.nonzero(finite[r0 : r0 + _ROWS_PER_BLOCK])
        out[rr + r0, cc] = z[rr + r0, cc] - _design(u_all[cc], v_all[rr + r0], terms) @ coef
    return out


def _scaled(index: np.ndarray, n: int) -> np.ndarray:
    return (2.0 * index / max(n - 1, 1) - 1.0).astype(float)


def _design(u: np.ndarray, v: np.ndarray, terms: list[tuple[int, int]]) -> np.ndarray:
    return np.column_stack([u**i * v**j for i, j in terms])


def _valid_pixels(z: np.ndarray, pixel_size: float, mask: np.ndarray | None) -> np.ndarray:
    if z.ndim != 2:
        raise TopographError(f"a height map must be 2-D (H, W), got shape {z.shape}", "pass one height map")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise TopographError(f"pixel size must be positive, got {pixel_size}", "pass --pixel-size-um")
    valid = np.isfinite(z)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != z.shape:
            raise TopographError(f"mask shape {m.shape} differs from height shape {z.shape}", "pass a matching mask")
        valid &= m
    if not valid.any():
        raise TopographError("the height map has no valid pixels (all NaN or masked)", "check the height map file")
    return valid


@dataclass(frozen=True)
class ArealParameters:
    """ISO 25178-2 style areal parameters of a height map.

    Heights in ``unit``; ``ssk``, ``sku`` dimensionless; ``sdr_percent`` in %.
    """

    sa: float
    """Arithmetic mean height, mean |z|."""
    sq: float
    """Root-mean-square height, sqrt(mean z²)."""
    sp: float
    """Maximum peak height, max z."""
    sv: float
    """Maximum pit depth, reported positive: −min z."""
    sz: float
    """Maximum height Sp + Sv (highest peak to lowest valley of the whole map, not a ten-point average)."""
    ssk: float
    """Skewness mean(z³) / Sq³."""
    sku: float
    """Kurtosis mean(z⁴) / Sq⁴."""
    sdr_percent: float
    """Developed interfacial area ratio 100·(mean(sqrt(1 + |∇z|²)) − 1), %."""
    unit: str
    form: str
    """Form removed before evaluation ("none", "plane", "poly2", "poly3")."""
    pixel_size: float
    n_pixels: int
    """Valid pixels evaluated (Sdr uses the subset where the gradient is defined)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: every parameter as ``{"value", "unit"}`` plus form, pixel size and pixel count."""
        out: dict[str, Any] = {"form_removed": self.form, "pixel_size": self.pixel_size, "n_pixels": self.n_pixels}
        for name, kind in _UNIT_KIND.items():
            unit = self.unit if kind == 1 else "%" if kind == -1 else "1"
            out[name] = {"value": float(getattr(self, name)), "unit": unit}
        out["sz"]["definition"] = "Sp + Sv (highest peak to lowest valley)"
        return out

    def columns(self) -> list[tuple[str, str]]:
        """(header, formatted value) pairs for a one-row table."""
        u = "µm" if self.unit == "um" else self.unit
        return [
            (f"Sa\n{u}", f"{self.sa:.4g}"),
            (f"Sq\n{u}", f"{self.sq:.4g}"),
            (f"Sp\n{u}", f"{self.sp:.4g}"),
            (f"Sv\n{u}", f"{self.sv:.4g}"),
            (f"Sz\n{u}", f"{self.sz:.4g}"),
            ("Ssk", f"{self.ssk:.3f}"),
            ("Sku", f"{self.sku:.3f}"),
            ("Sdr\n%", f"{self.sdr_percent:.4g}"),
        ]

    def one_line(self) -> str:
        """All parameters on one line of text."""
        return "  ".join(f"{' '.join(h.split())}={v}" for h, v in self.columns())


def areal_parameters(
    height: np.ndarray,
    pixel_size: float,
    mask: np.ndarray | None = None,
    form: str = "plane",
    unit: str = "um",
) -> ArealParameters:
    """Areal height and hybrid parameters of a height map (ISO 25178-2 definitions, discrete sums).

    After :func:`remove_form` (the mean is removed in every case, so the reference is the mean plane):
    Sa = mean|z|, Sq = sqrt(mean z²), Sp = max z, Sv = −min z, Sz = Sp + Sv, Ssk = mean z³ / Sq³,
    Sku = mean z⁴ / Sq⁴, and Sdr = 100·(mean sqrt(1 + (∂z/∂x)² + (∂z/∂y)²) − 1) % with central
    differences (one-sided at the map border) over pixels whose gradient is defined.

    Args:
        height: (H, W) heights in ``unit``, NaN = unknown.
        pixel_size: grid spacing in the same unit as the heights.
        mask: optional (H, W) bool of pixels to evaluate.
        form: "plane" (default), "poly2", "poly3" or "none".
        unit: length unit of the heights and pixel size.

    Returns:
        :class:`ArealParameters`.

    Raises:
        TopographError: all-NaN map, bad pixel size or form.
    """
    z = remove_form(height, pixel_size, form, mask)
    valid = _valid_pixels(z, pixel_size, mask)
    zv = z[valid]
    zv = zv - zv.mean()
    sq = float(np.sqrt(np.mean(zv**2)))
    sp, sv = float(zv.max()), float(-zv.min())
    ssk = float(np.mean(zv**3) / sq**3) if sq > 0 else float("nan")
    sku = float(np.mean(zv**4) / sq**4) if sq > 0 else float("nan")
    zm = np.where(valid, z, np.nan)
    gy, gx = _gradient(zm, pixel_size)
    slope2 = gx**2 + gy**2
    ok = np.isfinite(slope2)
    sdr = 100.0 * float(np.mean(np.sqrt(1.0 + slope2[ok])) - 1.0) if ok.any() else float("nan")
    if not ok.any():
        log.warning("no pixel has a defined gradient (isolated valid pixels); Sdr is undefined")
    return ArealParameters(
        sa=float(np.mean(np.abs(zv))),
        sq=sq,
        sp=sp,
        sv=sv,
        sz=sp + sv,
        ssk=ssk,
        sku=sku,
        sdr_percent=sdr,
        unit=unit,
        form=form,
        pixel_size=float(pixel_size),
        n_pixels=int(valid.sum()),
    )


def _gradient(z: np.ndarray, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(∂z/∂y, ∂z/∂x) by central differences; NaN where a needed neighbour is NaN; one-sided at the border."""
    if min(z.shape) < 2:
        return np.full_like(z, np.nan), np.full_like(z, np.nan)
    return tuple(np.gradient(z, pixel_size))  # type: ignore[return-value]
