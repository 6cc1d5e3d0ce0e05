"""Builders of the small datasets and run folders tests need (no real data, all made in milliseconds).

- :func:`write_pair`, :func:`make_dataset`: pairs in the official ISIC layout, with the defects tests need.
- :func:`make_tiny_prepared`: a prepared cache of dark discs on noisy skin, written straight as arrays.
- :func:`shifted_prepared`, :class:`Brightness`, :func:`make_run`: a prepared dataset whose images show a
  bright rectangle shifted from the mask's by a different amount per image, a "model" that marks bright
  pixels (so IoUs spread above and below the challenge's 0.65), and run folders by the training contract.

The pytest fixtures built from them live in ``tests/conftest.py``.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from helpers.data.isic import SPLIT_DIRS
from helpers.data.prep import load_prepared, prepare
from helpers.models import build_model
from helpers.models.summary import count_parameters
from helpers.training.checkpoints import save_weights_atomic


def write_pair(root: Path, split: str, isic_id: str, size=(40, 30), lesion=True) -> tuple[Path, Path]:
    """One RGB JPEG and its 0/255 mask (a centred rectangle) in the split's folders."""
    image_dir, mask_dir = (root / d for d in SPLIT_DIRS[split])
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(int(isic_id[-7:]))
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if lesion:
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    image_path, mask_path = image_dir / f"{isic_id}.jpg", mask_dir / f"{isic_id}_segmentation.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def make_dataset(root: Path, count: int, split: str = "train", start: int = 0, size=(40, 30)) -> Path:
    """``count`` clean pairs with ids from ``start``."""
    for k in range(start, start + count):
        write_pair(root, split, f"ISIC_{k:07d}", size)
    return root


def write_shifted_pair(root: Path, index: int, size=(48, 36)) -> None:
    """Image with a bright rectangle; mask with the same rectangle shifted right by ``index % 8`` px."""
    image_dir, mask_dir = (root / d for d in SPLIT_DIRS["train"])
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    width, height = size[0] + 4 * (index % 3), size[1] + 2 * (index % 2)   # varied original sizes
    image = np.full((height, width, 3), 40, np.uint8)
    top, left = height // 4, width // 4
    image[top:3 * height // 4, left:3 * width // 4] = 220
    mask = np.zeros((height, width), np.uint8)
    shift = 3 * (index % 8)
    mask[top:3 * height // 4, left + shift:3 * width // 4 + shift] = 255
    isic_id = f"ISIC_{index:07d}"
    Image.fromarray(image).save(image_dir / f"{isic_id}.jpg", quality=98)
    Image.fromarray(mask).save(mask_dir / f"{isic_id}_segmentation.png")


def shifted_prepared(tmp: Path, count: int = 40, image_size: int = 32):
    """A prepared seed-protocol dataset of :func:`write_shifted_pair` images (6 test images for 40)."""
    raw = tmp / "raw"
    for k in range(count):
        write_shifted_pair(raw, k)
    return prepare(raw, tmp / "prepared", image_size=image_size, protocol="seed", seed=1, progress=False)


class Brightness(nn.Module):
    """A "model" that marks bright pixels: logits = scale · (channel mean − 0.27) of the normalised input.

    After helpers.data.to_model_input the fixtures' skin (grey 40) averages −1.29 and the bright box
    (grey 220) +1.83: with scale 1 the probs are 0.17 and 0.83, with scale 20 nearly 0 and 1.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, images):  # (B, 3, H, W) → (B, 1, H, W)
        return self.scale * (images.mean(1, keepdim=True) - 0.27)


def make_run(results_root: Path, run_id: str, model: str, fraction: float, prepared_dir: Path,
             finished: bool = True, image_size: int = 32, profile: str = "smoke") -> Path:
    """A run folder by the training contract, with a tiny model's best.pt."""
    run_dir = results_root / "runs" / run_id
    run_dir.mkdir(parents=True)
    torch.manual_seed(len(run_id))
    net = build_model(model, "tiny")
    save_weights_atomic(net, run_dir / "checkpoints" / "best.pt", metric=0.5, epoch=1)
    config = {"run_id": run_id, "model": model, "model_config": "tiny", "model_overrides": {},
              "fraction": fraction, "image_size": image_size, "seed": 42, "protocol": "seed",
              "dataset": "shifted", "prepared_dir": str(prepared_dir), "checkpoint_dir": str(run_dir / "checkpoints"),
              "profile": {"name": profile}, "num_epochs": 2, "batch_size": 4, "lr": 1e-4, "weight_decay": 1e-4,
              "amp": "off", "device": "cpu", "hardware": "cpu: test", "torch_version": torch.__version__,
              "params": count_parameters(net)}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "history.csv").write_text("epoch,train_loss,val_loss,val_dice,lr,epoch_seconds,images_per_s\n"
                                         "1,0.9,0.8,0.40,1e-4,1.5,20\n2,0.7,0.6,0.50,5e-5,1.4,21\n")
    if finished:
        (run_dir / "done.json").write_text(json.dumps({
            "best_epoch": 2, "best_val_dice": 0.5, "epochs": 2, "train_seconds": 2.9 + fraction,
            "images_per_s": 20.5, "stopped_early": False, "status": "finished"}))
    return run_dir


def make_tiny_prepared(folder: Path, count: int = 24, size: int = 32, n_val: int = 4, seed: int = 0):
    """``count`` images of ``size`` px: the first ``count - n_val`` train (nested ranks 0..), the rest val.

    Returns:
        The loaded :class:`helpers.prep.Prepared`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    for k in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        radius = rng.uniform(0.15, 0.3) * size
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        skin = np.array([200, 160, 140]) + rng.normal(0, 12, (size, size, 3))
        images[k] = np.clip(skin - masks[k][..., None] * np.array([110, 90, 70]), 0, 255)
    n_train = count - n_val
    table = pd.DataFrame({"isic_id": [f"ISIC_{k:07d}" for k in range(count)],
                          "split": ["train"] * n_train + ["val"] * n_val,
                          "protocol": "seed",
                          "train_rank": list(range(n_train)) + [-1] * n_val})
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    table.to_csv(folder / "splits.csv", index=False)
    manifest = {"version": 1, "source": "tiny", "image_size": size, "protocol": "seed", "seed": seed, "count": count}
    (folder / "prepared.json").write_text(json.dumps(manifest))
    return load_prepared(folder)
