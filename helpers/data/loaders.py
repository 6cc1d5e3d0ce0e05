"""Dataset and DataLoaders over a prepared cache, with albumentations augmentation.

Training reads the uint8 arrays that :mod:`helpers.data.prep` cached (no JPEG/PNG decoding per
epoch). A loader yields ``images`` as uint8 (B, H, W, 3), exactly as cached, and ``masks`` as
float (B, 1, H, W) in {0, 1}; :func:`to_model_input` turns the images into the normalised float
(B, 3, H, W) the models take, on the device, so the host → GPU copy moves bytes, not floats.
Evaluation calls the same function.

Repeatable augmentation: :class:`EpochSampler` draws, from ``(seed, epoch)`` alone, the order of
the training images and one augmentation seed per image, and the dataset reseeds the pipeline
with that seed before each image. A batch is therefore the same whatever the number of worker
processes, and a run resumed in the middle of training sees exactly the batches it would have
seen. Under ``torchrun`` the sampler gives every process its share of each global batch.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

# else importing albumentations asks PyPI for a newer version
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from helpers.data.prep import Prepared

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform() -> A.Compose:
    """Cheap augmentations for dermoscopy: flips, 90° turns, a mild affine warp, colour jitter.

    Lesions have no up or down, so every flip and turn is a valid new image; the affine warp
    (±6 % shift, ±10 % scale, ±15°) and the colour jitter (±20 % brightness/contrast/saturation,
    ±2 % hue) imitate other cameras and framings. Masks follow the geometric transforms with
    nearest-neighbour interpolation, so they stay binary.
    """
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15), p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ])


def reseed(transform: A.Compose, seed: int) -> None:
    """Seed a pipeline for one image, with a different stream for each of its transforms.

    (albumentations' own ``set_random_seed`` gives every transform the same seed, which makes
    e.g. the horizontal and the vertical flip always fire together.)
    """
    if not hasattr(transform, "set_random_seed"):  # albumentations < 2 draws from the global RNGs
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return
    transform.set_random_seed(seed)
    for j, each in enumerate(transform.transforms):
        each.set_random_seed(int(np.random.SeedSequence([seed, j]).generate_state(1)[0]))


def to_model_input(images, device: torch.device | str | None = None,
                   memory_format: torch.memory_format = torch.contiguous_format, *,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Cached uint8 images → normalised float model input (ImageNet mean and std by default).

    Args:
        images: uint8 (N, H, W, 3) or one image (H, W, 3); numpy array or torch tensor.
        device: where the result goes (the uint8 batch is moved first: 4× fewer bytes).
        memory_format: ``torch.channels_last`` for training (faster convolutions on CUDA and on the
            CPU).
        mean, std: per channel, of pixels scaled to [0, 1] (an exported model carries its own).

    Returns:
        float32 (N, 3, H, W).

    Raises:
        ValueError: the input is not uint8 with three channels last.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images, dtype=images.dtype, copy=True))
    images = images[None] if images.ndim == 3 else images
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"to_model_input takes uint8 images (N, H, W, 3) as cached by "
                         f"helpers.data.prep; got {images.dtype} {tuple(images.shape)}. Pass "
                         f"prepared.images[rows], not floats.")
    x = images.to(device or images.device, non_blocking=True).float()  # (N, H, W, 3)
    scale = torch.tensor([1 / (255 * s) for s in std], device=x.device)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device)
    # (N, 3, H, W), already channels_last in memory
    x = x.mul_(scale).add_(shift).permute(0, 3, 1, 2)
    # a copy only for the default (contiguous) format
    return x.contiguous(memory_format=memory_format)


class LesionDataset(Dataset):
    """Images and masks of some rows of a prepared cache, optionally augmented.

    Args:
        images: uint8 (N, S, S, 3), e.g. the memory-mapped ``prepared.images``.
        masks: uint8 (N, S, S) in {0, 1}.
        rows: which rows of the arrays this dataset holds.
        transform: albumentations pipeline, or None for none (evaluation).
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, rows,
                 transform: A.Compose | None = None):
        self.images, self.masks, self.transform = images, masks, transform
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        """``key`` is a position, or ``(position, augmentation seed)`` from :class:`EpochSampler`.

        Returns:
            ``(image, mask)``: uint8 (H, W, 3) and float32 (1, H, W).
        """
        position, seed = key if isinstance(key, tuple) else (key, None)
        row = self.rows[position]
        image, mask = np.array(self.images[row]), np.array(self.masks[row])
        if self.transform is not None:
            if seed is not None:
                reseed(self.transform, seed)
            out = self.transform(image=image, mask=mask)
            image, mask = np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])
        return torch.from_numpy(image), torch.from_numpy(mask).float()[None]  # (H, W, 3), (1, H, W)


class EpochSampler(Sampler):
    """Seeded order and augmentation seeds per epoch, shared out across processes.

    Every process draws the same global order from ``(seed, epoch)``; it is padded (by repeating
    its start) to a multiple of ``num_replicas`` and process ``rank`` takes every
    ``num_replicas``-th item from ``rank`` on, so each global batch of ``num_replicas · b`` images
    is split into ``num_replicas`` local batches of ``b``, as ``DistributedSampler`` does.

    Args:
        size: number of items in the dataset.
        seed: run seed.
        shuffle: draw a new order each epoch (training) or keep ``0..size-1`` (evaluation).
        num_replicas: processes sharing the data (the ``torchrun`` world size).
        rank: this process.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the order of ``epoch``, skipping the first ``start`` items of this process
        (resume)."""
        self.epoch, self.start = epoch, start

    def _epoch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        order = (torch.randperm(self.size, generator=generator) if self.shuffle
                 else torch.arange(self.size))
        seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=generator)
        pad = -self.size % self.num_replicas
        order, seeds = torch.cat([order, order[:pad]]), torch.cat([seeds, seeds[:pad]])
        return order[self.rank::self.num_replicas], seeds[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self._epoch_order()
        return iter(list(zip(order.tolist(), seeds.tolist()))[self.start:])

    # 0 when a resume skips the whole epoch (a checkpoint saved after its last batch)
    def __len__(self) -> int:
        return max(0, -(-self.size // self.num_replicas) - self.start)


def single_threaded_opencv() -> None:
    """Turn OpenCV's own thread pool off (albumentations' warps run on OpenCV).

    A pool that the main process already started does not survive ``fork``: a loader worker could
    then wait for ever inside a cv2 call (seen here with two workers). Called before workers start
    and in every worker; loaders parallelise over images instead.
    """
    cv2.setNumThreads(0)


def seed_worker(worker_id: int) -> None:
    """Loader-worker start: seed numpy and random from the worker's torch seed, OpenCV
    single-threaded."""
    single_threaded_opencv()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Loaders:
    """The training and validation loaders of one run, and the global batch size."""

    train: DataLoader
    val: DataLoader
    batch_size: int


def _loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, seed: int,
            pin_memory: bool) -> DataLoader:
    if num_workers > 0:
        single_threaded_opencv()
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed))


def make_loaders(prepared: Prepared, fraction: float, batch_size: int, num_workers: int = 0,
                 seed: int = 42, distributed: bool = False, augment: bool = True,
                 pin_memory: bool | None = None) -> Loaders:
    """Training loader (the nested ``fraction`` of the train split, augmented) and validation
    loader.

    Args:
        prepared: the prepared dataset.
        fraction: training fraction, e.g. 0.25.
        batch_size: global batch size; under ``torchrun`` each process loads ``batch_size / world``.
        num_workers: loader worker processes (0: load in the main process).
        seed: run seed: order and augmentation of every epoch follow from it.
        distributed: share the data across the processes of the default process group.
        augment: augment the training images (:func:`train_transform`).
        pin_memory: page-locked host memory; default: only when CUDA is available.

    Returns:
        :class:`Loaders`; call ``loaders.train.sampler.set_epoch(epoch)`` before each epoch.

    Raises:
        ValueError: the batch size does not split evenly across the processes.
    """
    world, rank = 1, 0
    if distributed:
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} does not split evenly across {world} processes; "
                         f"choose a multiple of {world} (BATCH_SIZE or --batch-size).")
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    local = batch_size // world
    train_rows = prepared.indices("train", fraction)
    train = LesionDataset(prepared.images, prepared.masks, train_rows,
                          train_transform() if augment else None)
    val = LesionDataset(prepared.images, prepared.masks, prepared.indices("val"))
    # a shard each, no padding: every image counted once
    val_sampler = list(range(rank, len(val), world))
    return Loaders(
        train=_loader(train, EpochSampler(len(train), seed, True, world, rank), local, num_workers,
                      seed, pin_memory),
        val=_loader(val, val_sampler, local, num_workers, seed, pin_memory),
        batch_size=batch_size)


def augmented_examples(prepared: Prepared, count: int = 6, seed: int = 0, row: int | None = None):
    """One training image and ``count - 1`` augmented versions of it, to look at.

    Returns:
        ``(images, masks)``: uint8 (count, S, S, 3) and uint8 (count, S, S).
    """
    row = int(prepared.indices("train")[0] if row is None else row)
    dataset = LesionDataset(prepared.images, prepared.masks, [row], train_transform())
    pairs = [(prepared.images[row], prepared.masks[row])]
    pairs += [tuple(t.numpy() for t in dataset[(0, seed + k)]) for k in range(count - 1)]
    return (np.stack([p[0] for p in pairs]),
            np.stack([p[1].reshape(p[0].shape[:2]) for p in pairs]).astype(np.uint8))
