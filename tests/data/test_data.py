"""Dataset, augmentation, sampler and loaders over a prepared cache."""
import albumentations as A
import numpy as np
import pytest
import torch

from helpers.data.loaders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochSampler,
    LesionDataset,
    augmented_examples,
    make_loaders,
    reseed,
    to_model_input,
    train_transform,
)


def test_to_model_input_normalises_with_imagenet_statistics():
    images = np.zeros((2, 4, 5, 3), np.uint8)
    images[1] = 255
    x = to_model_input(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32 and x.is_contiguous()
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], -mean / std)
    assert torch.allclose(x[1, :, 3, 4], (1 - mean) / std)
    assert to_model_input(torch.from_numpy(images[0])).shape == (1, 3, 4, 5)  # one (H, W, 3) image
    assert to_model_input(images, memory_format=torch.channels_last).is_contiguous(memory_format=torch.channels_last)


def test_to_model_input_refuses_floats_and_channels_first():
    with pytest.raises(ValueError, match="uint8 images"):
        to_model_input(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        to_model_input(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_dataset_without_transform_returns_the_cached_arrays(tiny):
    dataset = LesionDataset(tiny.images, tiny.masks, tiny.indices("val"))
    image, mask = dataset[1]
    row = tiny.indices("val")[1]
    assert image.dtype == torch.uint8 and image.shape == (32, 32, 3)
    assert mask.dtype == torch.float32 and mask.shape == (1, 32, 32)
    assert np.array_equal(image.numpy(), tiny.images[row]) and np.array_equal(mask[0].numpy(), tiny.masks[row])


def test_augmentation_keeps_masks_binary_and_aligned_with_the_image():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 6:14] = 1  # off-centre, so flips and turns move it
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)  # white where the lesion is
    dataset = LesionDataset(image[None], mask[None], [0], train_transform())
    for seed in range(20):
        out_image, out_mask = dataset[(0, seed)]
        assert set(np.unique(out_mask.numpy())) <= {0.0, 1.0}
        agree = ((out_image[..., 0].numpy() > 100) == (out_mask[0].numpy() > 0.5)).mean()
        assert agree > 0.95, f"seed {seed}: image and mask disagree on {1 - agree:.1%} of pixels"


def test_the_same_seed_gives_the_same_augmentation_and_flips_are_independent():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    dataset = LesionDataset(image[None], np.zeros((1, 16, 16), np.uint8), [0], train_transform())
    assert torch.equal(dataset[(0, 7)][0], dataset[(0, 7)][0])
    assert not all(torch.equal(dataset[(0, 7)][0], dataset[(0, s)][0]) for s in range(8, 12))
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    outcomes = set()
    for seed in range(40):
        reseed(flips, seed)
        outcomes.add(tuple(name for name, _ in flips(image=image)["applied_transforms"]))
    assert outcomes == {(), ("HorizontalFlip",), ("VerticalFlip",), ("HorizontalFlip", "VerticalFlip")}


def test_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != first
    sampler.set_epoch(1)
    assert list(sampler) == first and sorted(i for i, _ in first) == list(range(10))
    sampler.set_epoch(1, start=4)
    assert list(sampler) == first[4:] and len(sampler) == 6


def test_sampler_shares_each_global_batch_between_processes():
    whole = EpochSampler(11, seed=3)
    whole.set_epoch(5)
    order = [i for i, _ in whole] + [i for i, _ in whole][:1]  # padded to 12 = 2 processes x 6
    shards = []
    for rank in (0, 1):
        sampler = EpochSampler(11, seed=3, num_replicas=2, rank=rank)
        sampler.set_epoch(5)
        shards.append([i for i, _ in sampler])
    assert shards[0] == order[0::2] and shards[1] == order[1::2] and len(shards[0]) == 6
    for k in range(3):  # local batches of 2 together form the global batch of 4
        assert sorted(shards[0][2 * k: 2 * k + 2] + shards[1][2 * k: 2 * k + 2]) == sorted(order[4 * k: 4 * k + 4])


def test_loaders_hold_the_fraction_and_repeat_with_any_number_of_workers(tiny):
    loaders = make_loaders(tiny, 0.5, batch_size=4, num_workers=0, seed=1)
    assert len(loaders.train.dataset) == 10 and len(loaders.val.dataset) == 4
    assert not loaders.train.pin_memory  # no CUDA here
    with_workers = make_loaders(tiny, 0.5, batch_size=4, num_workers=2, seed=1)
    assert with_workers.train.persistent_workers
    for epoch in (1, 2):
        loaders.train.sampler.set_epoch(epoch)
        with_workers.train.sampler.set_epoch(epoch)
        for (a_images, a_masks), (b_images, b_masks) in zip(loaders.train, with_workers.train, strict=True):
            assert a_images.shape == (4, 32, 32, 3) or a_images.shape == (2, 32, 32, 3)
            assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)


def test_augmented_examples_start_with_the_cached_image(tiny):
    images, masks = augmented_examples(tiny, count=4, seed=0)
    row = tiny.indices("train")[0]
    assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32) and masks.dtype == np.uint8
    assert np.array_equal(images[0], tiny.images[row])


def test_loaders_with_workers_turn_opencv_threads_off_before_forking(tiny, monkeypatch):
    import cv2

    cv2.setNumThreads(2)
    make_loaders(tiny, 0.5, batch_size=4, num_workers=0, seed=1)
    assert cv2.getNumThreads() == 2            # in-process loading leaves OpenCV alone
    loaders = make_loaders(tiny, 0.5, batch_size=4, num_workers=2, seed=1)
    assert cv2.getNumThreads() == 1            # a pool started here would not survive fork
    assert loaders.train.worker_init_fn.__name__ == "seed_worker"


@pytest.mark.slow
def test_importing_the_kit_never_asks_pypi_for_albumentations_updates():
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import urllib.request\n"
             "def refuse(*a, **k): raise SystemExit(3)\n"  # a network attempt ends the process with 3
             "urllib.request.build_opener = refuse\n"
             "import helpers.tools.bench, helpers.data\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parents[2], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    bare = subprocess.run([sys.executable, "-c", probe.replace("helpers.tools.bench, helpers.data", "albumentations")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 3  # the probe would have caught the check: albumentations alone does ask
