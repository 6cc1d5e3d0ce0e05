"""What each image is like, from its pixels and its true mask: what makes it hard, and its skin
tone.

    factors = image_factors(prepared.images, prepared.masks)  # one row per image
    groups = by_group(scores, "ita_group")                    # mean Dice per group, n, bootstrap CI

Every rule is simple and stated here, so a student can check it on an image (CIELAB, D65, L* 0-100):

- ``lesion_pct``: the true lesion's share of the image, in %.
- ``edge_contact``: the true lesion reaches the image border (the crop may cut it).
- ``dark_frame``: more than a quarter of the outer tenth of the image (a frame ``side // 10`` wide)
  has L* below 15.7: the dark round border of a dermatoscope, or dark vignette corners (the rule of
  the failure table, :mod:`helpers.evaluation.failures`).
- ``contrast``: ΔE (CIE 1976) between the mean colour of the lesion and that of its **skin ring**:
  the pixels from ``side * 0.03`` to ``side * 0.10`` pixels outside the lesion, never nearly black
  ones (L* < 15.7, a dark frame).
- ``ita``: the individual typology angle of the skin ring, ``arctan((L* - 50) / b*)`` in degrees,
  from the ring's median L* and b* (``arctan2``: a bluish ring, b* ≤ 0, reads as very light, not
  as an error). ``ita_group``: very light > 55°, light 41-55°, intermediate 28-41°, tan 10-28°,
  brown -30-10°, dark < -30° (Chardon et al. 1991; Kinyanjui et al. 2020 for dermoscopy).
- ``hair_pct``: the share of the skin (outside the dilated lesion) where a morphological black-hat
  of L* (closing minus image, a disc ``side // 20`` wide) exceeds 16: thin dark lines on lighter
  skin, mostly hair, also ruler ticks and a dermatoscope's rim. ``hair``: above 0.5 %.
- ``ink_pct``: the share of the skin that is strongly saturated violet to purple (hue 240-320°,
  HSV saturation > 0.4, value > 0.25): surgical marker and ink dots (blue colour stickers, near
  200°, are left out). ``ink``: above 0.1 %.
- Rulers are **not** counted: at 128 px their ticks cannot be told from hair by a simple rule.

These are crude, documented proxies, not dermatological assessments: a dermatoscope's light and
white balance shift L* and b*, so an image's ITA measures the photograph as much as the skin.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from helpers.evaluation import stats

DARK_L = 40 * 100 / 255  # L* below this is "nearly black" (40 on OpenCV's 8-bit L scale)
FRAME_SHARE = 0.25  # a dark frame: more than this share of the outer tenth is nearly black
RING = (0.03, 0.10)  # the skin ring: from this share of the side outside the lesion to this one
ITA_EDGES = (-30, 10, 28, 41, 55)  # degrees: the standard groups' boundaries (Chardon et al. 1991)
ITA_GROUPS = ("dark", "brown", "tan", "intermediate", "light", "very light")
HAIR_CONTRAST, HAIR_SHARE = (
    16.0,
    0.005,
)  # black-hat of L* above this; an image "has hair" above this share
INK_HUE, INK_SATURATION, INK_VALUE, INK_SHARE = (240, 320), 0.4, 0.25, 0.001


def to_lab(images: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB images: uint8 (..., H, W, 3) → float32 (..., H, W, 3), L* 0-100, a* and
    b* ±127."""
    images = np.asarray(images)
    flat = images.reshape(-1, *images.shape[-3:]).astype(np.float32) / 255
    lab = np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB) for im in flat])
    return lab.reshape(images.shape).astype(np.float32)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """bool (H, W) grown by ``pixels`` (a disc); 0 pixels: the mask itself."""
    if pixels <= 0:
        return mask.copy()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)


def frame_of(side: int) -> np.ndarray:
    """bool (side, side): the outer tenth of a square image (a frame ``side // 10`` pixels wide)."""
    edge = max(1, side // 10)
    frame = np.ones((side, side), bool)
    frame[edge:-edge, edge:-edge] = False
    return frame


def has_dark_frame(lightness: np.ndarray) -> bool:
    """More than a quarter of the outer tenth is nearly black; ``lightness``: L* (H, W)."""
    return bool((lightness[frame_of(lightness.shape[0])] < DARK_L).mean() > FRAME_SHARE)


def skin_ring(mask: np.ndarray, lightness: np.ndarray) -> np.ndarray:
    """bool (H, W): the skin ring around the lesion (module docstring), never nearly black pixels.

    Where the ring is empty (a lesion that fills the image) it is every pixel beyond the inner gap.
    """
    side, mask = mask.shape[0], mask.astype(bool)
    inner, outer = (_dilate(mask, max(1, round(side * r))) for r in RING)
    ring = outer & ~inner & (lightness >= DARK_L)
    return ring if ring.any() else ~inner & (lightness >= DARK_L)


def ita(lightness, b) -> np.ndarray:
    """The individual typology angle in degrees: arctan((L* - 50) / b*) (arctan2: any b*)."""
    return np.degrees(np.arctan2(np.asarray(lightness, np.float64) - 50, np.asarray(b, np.float64)))


def ita_group(angles) -> pd.Categorical:
    """The standard ITA group of each angle, ``dark`` (≤ -30°) to ``very light`` (> 55°); NaN:
    NaN."""
    return pd.cut(
        np.asarray(angles, np.float64), [-np.inf, *ITA_EDGES, np.inf], labels=list(ITA_GROUPS)
    )


def hair_share(lightness: np.ndarray, skin: np.ndarray) -> float:
    """Share of ``skin`` pixels where the black-hat of L* exceeds :data:`HAIR_CONTRAST`."""
    size = max(3, lightness.shape[0] // 20) | 1  # odd: a disc centred on the pixel
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    blackhat = cv2.morphologyEx(lightness.astype(np.float32), cv2.MORPH_BLACKHAT, disc)
    return float((blackhat[skin] > HAIR_CONTRAST).mean()) if skin.any() else float("nan")


def ink_share(image: np.ndarray, skin: np.ndarray) -> float:
    """Share of ``skin`` pixels of strongly saturated violet to purple; image uint8 (H, W, 3)."""
    hsv = cv2.cvtColor(
        np.ascontiguousarray(image).astype(np.float32) / 255, cv2.COLOR_RGB2HSV
    )  # H in degrees
    inky = (
        (hsv[..., 0] >= INK_HUE[0])
        & (hsv[..., 0] <= INK_HUE[1])
        & (hsv[..., 1] > INK_SATURATION)
        & (hsv[..., 2] > INK_VALUE)
    )
    return float(inky[skin].mean()) if skin.any() else float("nan")


def one_image(image: np.ndarray, mask: np.ndarray) -> dict:
    """The factors of one image, uint8 (H, W, 3), and its true mask {0, 1} (H, W): module
    docstring."""
    lab, mask = to_lab(image), np.asarray(mask).astype(bool)  # (H, W, 3), (H, W)
    lit = lab[..., 0] >= DARK_L  # not nearly black
    ring = skin_ring(mask, lab[..., 0])
    skin = (
        ~_dilate(mask, max(1, round(mask.shape[0] * RING[0]))) & lit
    )  # all skin beyond the inner gap
    lesion = mask & lit if (mask & lit).any() else mask
    nan = float("nan")
    contrast = (
        float(np.linalg.norm(lab[lesion].mean(0) - lab[ring].mean(0)))
        if lesion.any() and ring.any()
        else nan
    )
    skin_l, skin_b = (
        (float(np.median(lab[ring][:, k])) for k in (0, 2)) if ring.any() else (nan, nan)
    )
    edges = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    hair, ink = hair_share(lab[..., 0], skin), ink_share(image, skin)
    return {
        "lesion_pct": 100 * float(mask.mean()),
        "edge_contact": bool(edges.any()),
        "dark_frame": has_dark_frame(lab[..., 0]),
        "contrast": contrast,
        "skin_L": skin_l,
        "skin_b": skin_b,
        "ita": float(ita(skin_l, skin_b)),
        "hair_pct": 100 * hair,
        "hair": bool(hair > HAIR_SHARE),
        "ink_pct": 100 * ink,
        "ink": bool(ink > INK_SHARE),
    }


def image_factors(images: np.ndarray, masks: np.ndarray, ids=None) -> pd.DataFrame:
    """One row of factors per image, with ``ita_group``.

    Args:
        images, masks: e.g. ``prepared.images[rows]`` and ``prepared.masks[rows]``.
        ids: the images' ids (an ``isic_id`` column); default 0..N-1.
    """
    if len(images) != len(masks):
        raise ValueError(
            f"image_factors: {len(images)} images but {len(masks)} masks; give one mask per image."
        )
    table = pd.DataFrame([one_image(im, m) for im, m in zip(images, masks)])
    table.insert(0, "isic_id", list(ids) if ids is not None else range(len(table)))
    table["ita_group"] = ita_group(table["ita"]) if len(table) else pd.Categorical([], ITA_GROUPS)
    return table


def quartiles(values, name: str) -> pd.Categorical:
    """Quartile labels ``Q1 (lowest <name>)`` .. ``Q4 (highest <name>)`` of values, in their order
    (ties broken by position, so the quartiles have equal sizes)."""
    labels = [f"Q1 (lowest {name})", "Q2", "Q3", f"Q4 (highest {name})"]
    ranks = pd.Series(np.asarray(values, np.float64)).rank(method="first").to_numpy()
    return pd.qcut(ranks, 4, labels=labels)


def by_group(
    table: pd.DataFrame, group: str, score: str = "dice", n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Mean ``score`` per value of ``group``: n, mean, percentile-bootstrap 95 % CI of the mean.

    Returns:
        One row per group (in category order; empty groups kept with n = 0): ``group``, ``n``,
        ``mean``, ``ci_low``, ``ci_high``.
    """
    rows = []
    for name, part in table.groupby(group, observed=False, sort=True)[score]:
        low, high = stats.bootstrap_ci(part.to_numpy(), n_boot, 0.95, seed)
        rows.append(
            {
                "group": name,
                "n": int(part.notna().sum()),
                "mean": float(part.mean()) if len(part) else float("nan"),
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows)
