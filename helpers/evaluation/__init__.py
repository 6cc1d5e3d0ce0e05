"""Evaluation: scoring trained runs on their test images, and what the scores say (notebook 04).

- ``inference``: probabilities in batches, flip TTA, post-processing, original-size masks, per-image scores,
  pruned UNet++ copies, mask outlines on images.
- ``predict``: masks for your own unlabelled images (any size, orientation or mode), and its command line.
- ``scoring``: which run folders are pending, evaluating them, reading their files back.
- ``stats``: bootstrap CIs, paired comparisons, Holm correction, the spread between seeds.
- ``failures``: what the worst test images have in common.
- ``challenge``: the ISIC 2018 challenge format (0/255 PNGs at original size) and its zip.

Uses data, models and training; imports nothing from reporting.
"""
