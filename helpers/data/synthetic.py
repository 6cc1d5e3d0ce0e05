"""Procedural dermoscopy-like sample in the official ISIC 2018 Task 1 layout (the offline default).

The sample lets every notebook and test run without a download. It is written exactly as
the official training zips unpack, so the same reading code serves it and the real data:

    <root>/ISIC2018_Task1-2_Training_Input/ISIC_9000000.jpg
    <root>/ISIC2018_Task1_Training_GroundTruth/ISIC_9000000_segmentation.png   (0/255)

Ids start at 9000000 (9100000 for seed 1, and so on), far above the real ones, so sample and real
images never collide, nor two samples of other seeds. Each image is drawn from its own seeded
generator (``seed``, index), so image *i* is the same whatever ``count`` is. What a model has to
cope with on real images is imitated: non-square images of varied sizes, skin tone and texture,
irregular multi-tone lesions with fuzzy borders and dots, hairs across lesions, dark vignettes or a
dermoscope's round field, ruler marks, gel bubbles, lesions that touch the border, and lesion areas
from 2 % to 60 %. The mask is the lesion's 50 % opacity contour, so fuzzy borders are genuinely
ambiguous.

Two processes may make the same sample at once (two notebooks or workers on a fresh home): every
file is written under a temporary name of its own and renamed into place, the pairs are the same
whoever draws them, and each process checks that every pair is there before it marks the sample
finished.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from helpers import paths

IMAGE_DIR = "ISIC2018_Task1-2_Training_Input"
MASK_DIR = "ISIC2018_Task1_Training_GroundTruth"
FIRST_ID = 9_000_000
GENERATOR_VERSION = 1
SKIN_TONES = np.array([[242, 214, 204], [234, 190, 176], [218, 164, 146], [190, 134, 110],
                       [150, 102, 82]],
                      np.float32)
LESION_TONES = np.array([[196, 136, 100], [160, 100, 72], [122, 74, 56], [88, 54, 46],
                         [128, 84, 98], [70, 46, 56]],
                        np.float32)
BLUE_GREY = np.array([112, 112, 134], np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth random field in [-1, 1] with features about ``cell`` pixels wide. # (H, W)"""
    grid = rng.uniform(-1, 1,
                       (max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC))


def lesion_field(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """Normalised distance to an irregular lesion outline: < 1 inside, 1 on the border.

    Returns:
        field # (H, W) float32, and the lesion's mean radius in pixels.
    """
    area = np.exp(rng.uniform(np.log(0.03), np.log(0.6)))          # fraction of the image
    radius = np.sqrt(area * height * width / np.pi)
    if rng.random() < 0.15:                                         # lesion runs off an edge
        cy, cx = rng.uniform(0, height), rng.choice([0.05, 0.95]) * width
    else:
        cy = height * rng.uniform(0.3, 0.7)
        cx = width * rng.uniform(0.3, 0.7)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, stretch = rng.uniform(0, np.pi), rng.uniform(0.7, 1.0)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / stretch
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, 8):                                           # lobes of decreasing size
        outline += rng.normal(0, 0.18 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    wobble = 0.12 * smooth_noise(rng, height, width, max(8, int(radius / 3)))
    field = np.hypot(u, v) / (radius * np.clip(outline, 0.4, None) * np.sqrt(stretch)) + wobble
    return field.astype(np.float32), radius


def skin(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Skin background: tone, blotchy redness, fine texture. # (H, W, 3) float"""
    t = rng.uniform(0, len(SKIN_TONES) - 1.001)
    lo = int(t)
    base = SKIN_TONES[lo] * (1 - (t - lo)) + SKIN_TONES[lo + 1] * (t - lo)
    light = 1 + 0.06 * smooth_noise(rng, height, width, 60)
    redness = np.clip(smooth_noise(rng, height, width, 45), 0, 1) * rng.uniform(0, 18)
    img = base[None, None, :] * light[..., None]
    img[..., 0] += redness
    img[..., 1:] -= redness[..., None] * 0.5
    return img + rng.normal(0, 3, (height, width, 1)).astype(np.float32)     # texture


def lesion_colour(rng: np.random.Generator, field: np.ndarray, radius: float) -> np.ndarray:
    """Multi-tone lesion pigment: two browns, darker core, blue-grey veil, dots. # (H, W, 3)"""
    height, width = field.shape
    tones = LESION_TONES[rng.permutation(len(LESION_TONES))[:2]]
    cell = max(4, int(radius / rng.uniform(2, 5)))
    mix = np.clip(0.5 + 0.6 * smooth_noise(rng, height, width, cell), 0, 1)[..., None]
    colour = tones[0] * (1 - mix) + tones[1] * mix
    core = np.clip(1 - field, 0, 1)[..., None] * rng.uniform(0, 0.45)
    colour = colour * (1 - core)
    veil = (np.clip(smooth_noise(rng, height, width, cell) - 0.4, 0, 1)[..., None]
            * rng.uniform(0, 1.2))
    colour = colour * (1 - veil) + BLUE_GREY * veil
    dots = rng.random((height, width)) < rng.uniform(0, 0.003)
    colour[dots] *= 0.5
    return colour + rng.normal(0, 6, (height, width, 1)).astype(np.float32)


def draw_hairs(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    """Dark curved hairs drawn over everything (they do not change the mask)."""
    height, width = img.shape[:2]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(count):
        p0, p2 = rng.uniform(0, 1, 2) * (width, height), rng.uniform(0, 1, 2) * (width, height)
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15, 2) * (width, height)
        t = np.linspace(0, 1, 40)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        draw.line([tuple(p) for p in pts], fill=int(rng.uniform(150, 255)),
                  width=int(rng.integers(1, 4)))
    alpha = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.7)), np.float32)[..., None] / 255
    return img * (1 - alpha) + np.array([35, 25, 22], np.float32) * alpha


def draw_artefacts(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Occasional ruler ticks and gel bubbles."""
    height, width = img.shape[:2]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    if rng.random() < 0.12:                                          # ruler along the bottom
        y0 = int(height * rng.uniform(0.85, 0.95))
        step = int(rng.integers(8, 16))
        for i, x in enumerate(range(int(width * 0.1), int(width * 0.9), step)):
            draw.line([(x, y0), (x, y0 - (14 if i % 5 == 0 else 7))], fill=(30, 30, 30), width=2)
    for _ in range(int(rng.integers(1, 6)) if rng.random() < 0.2 else 0):   # gel bubbles
        r = int(rng.uniform(6, 40))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(250, 250, 250), width=2)
        draw.arc([cx - r * 0.6, cy - r * 0.6, cx + r * 0.2, cy + r * 0.2], 180, 270,
                 fill=(255, 255, 255), width=2)
    return np.asarray(pil, np.float32)


def vignette(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Dark corners, or (sometimes) the black round field of a contact dermoscope."""
    height, width = img.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    if rng.random() < 0.15:
        edge = rng.uniform(1.0, 1.2)
        shade = np.clip((edge - r) / 0.04, 0, 1)
    elif rng.random() < 0.7:
        shade = 1 - rng.uniform(0.3, 0.8) * np.clip((r - 0.75) / 0.6, 0, 1) ** 1.5
    else:
        shade = np.ones_like(r)
    return img * shade[..., None]


def make_case(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask.

    Colour fields are rendered at half resolution and upscaled (speed); the mask comes
    from the lesion field upscaled to full resolution, so its outline stays smooth.

    Args:
        seed: sample seed.
        index: image number within the sample.

    Returns:
        image uint8 # (H, W, 3), mask uint8 with values {0, 255} # (H, W)
    """
    rng = np.random.default_rng([seed, index])
    # 448 to 768 px wide, never square
    width = int(rng.integers(56, 97)) * 8
    height = int(width / rng.choice([1.05, 1.25, 1.33, 1.5])) // 2 * 2
    h2, w2 = height // 2, width // 2
    field, radius = lesion_field(rng, h2, w2)
    softness = rng.uniform(0.04, 0.3) * (1 + 0.6 * smooth_noise(rng, h2, w2, 40))
    alpha = np.clip(0.5 + (1 - field) / (2 * np.clip(softness, 0.01, None)), 0, 1)[..., None]
    alpha = alpha * rng.uniform(0.8, 1.0)                          # pigment lets skin show through
    img = skin(rng, h2, w2) * (1 - alpha) + lesion_colour(rng, field, radius) * alpha
    img = vignette(rng, img)
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BICUBIC)
    img = draw_hairs(rng, np.asarray(img, np.float32),
                     int(rng.integers(1, 25)) if rng.random() < 0.6 else 0)
    img = draw_artefacts(rng, img)
    full_field = np.asarray(Image.fromarray(field).resize((width, height), Image.BILINEAR))
    mask = (full_field < 1).astype(np.uint8) * 255
    return np.clip(img, 0, 255).astype(np.uint8), mask


def sample_id(seed: int, index: int) -> str:
    """The id of image ``index`` of the sample of ``seed``: ``ISIC_9000000`` up for seed 0,
    ``ISIC_9100000`` up for seed 1, and so on (the seed's last digit), so two samples are two
    datasets with ids of their own (the external test in notebook 04 refuses a dataset that shares
    ids with the training data)."""
    return f"ISIC_{FIRST_ID + 100_000 * (seed % 10) + index:07d}"


def _read_marker(path: Path) -> dict | None:
    """A sample's ``sample.json`` / ``sample.partial.json`` (None: absent, or being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_case(root: Path, seed: int, index: int) -> None:
    """Make one pair and write it atomically (temp file, then rename)."""
    isic_id = sample_id(seed, index)
    image_path = root / IMAGE_DIR / f"{isic_id}.jpg"
    mask_path = root / MASK_DIR / f"{isic_id}_segmentation.png"
    if image_path.exists() and mask_path.exists():
        return
    image, mask = make_case(seed, index)
    paths.write_atomic(image_path,
                       lambda tmp: Image.fromarray(image).save(tmp, format="JPEG", quality=90))
    paths.write_atomic(mask_path, lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))


def generate_sample(root: str | Path, count: int = 200, seed: int = 0, progress: bool = True,
                    workers: int = 2) -> Path:
    """Write ``count`` image/mask pairs under ``root`` in the official layout.

    A finished sample with the same count, seed and generator version is reused, an
    interrupted one is completed, and a sample made with other settings is replaced.

    Args:
        root: output folder (created).
        count: number of pairs.
        seed: sample seed.
        progress: show a progress bar.
        workers: threads drawing images in parallel.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    wanted = {"count": int(count), "seed": int(seed), "version": GENERATOR_VERSION}
    done, started = root / "sample.json", root / "sample.partial.json"
    markers = [_read_marker(done), _read_marker(started)]
    if markers[0] == wanted:
        return root
    # made with other settings (never: being made now)
    if any(marker not in (None, wanted) for marker in markers):
        for folder in (IMAGE_DIR, MASK_DIR):                        # other settings: start afresh
            for old in (root / folder).glob("ISIC_9*"):
                old.unlink(missing_ok=True)
    for folder in (IMAGE_DIR, MASK_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    paths.write_atomic(started, lambda tmp: tmp.write_text(json.dumps(wanted)))
    done.unlink(missing_ok=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = pool.map(lambda i: _write_case(root, seed, i), range(count))
        for _ in tqdm(jobs, total=count, desc="synthetic sample", disable=not progress):
            pass
    # every pair there (another process may have been clearing old files meanwhile)
    for index in range(count):
        _write_case(root, seed, index)
    paths.write_atomic(root / "README.txt",
                       lambda tmp: tmp.write_text("Synthetic dermoscopy-like sample made by "
                                                  "helpers/synthetic.py; not real patient data.\n"))
    paths.write_atomic(done, lambda tmp: tmp.write_text(json.dumps(wanted)))
    started.unlink(missing_ok=True)
    return root


FAULTS = {"truncated image": "the JPEG ends half-way", "missing mask": "an image without its mask",
          "orphan mask": "a mask without its image",
          "grey mask": "a mask with values between 0 and 255",
          "wrong size": "a mask smaller than its image"}


def broken_sample(root: str | Path, count: int = 8, seed: int = 3) -> dict[str, str]:
    """A small synthetic sample with one of each fault of :data:`FAULTS`, for the lesson on what
    goes wrong.

    Returns:
        fault → the id of the pair that has it.
    """
    root = generate_sample(root, count, seed, progress=False)
    ids = [sample_id(seed, i) for i in range(count)]
    image = lambda i: root / IMAGE_DIR / f"{ids[i]}.jpg"          # noqa: E731
    mask = lambda i: root / MASK_DIR / f"{ids[i]}_segmentation.png"  # noqa: E731
    image(0).write_bytes(image(0).read_bytes()[:600])
    mask(1).unlink()
    image(2).unlink()
    grey = np.asarray(Image.open(mask(3))).astype(np.float32)
    Image.fromarray((grey * 0.5).astype(np.uint8)).save(mask(3))
    small = Image.open(mask(4))
    small.resize((small.width // 2, small.height // 2)).save(mask(4))
    # no longer the sample it was: drawn again next time
    (root / "sample.json").unlink(missing_ok=True)
    return dict(zip(FAULTS, ids))
