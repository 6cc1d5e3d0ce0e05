"""Evaluation: scoring trained runs on their test images, and what the scores say (notebook 04).

- ``inference``: probabilities in batches, flip TTA, post-processing, original-size masks, per-image scores,
  pruned UNet++ copies, mask outlines on images.
- ``predict``: masks for your own unlabelled images (any size, orientation or mode), and its command line.
- ``predict_files``: predict's inputs, unique output names, and an output folder that never harms the user's files.
- ``outputs``: output folders that keep what the user made (manifests, refusals, never through a link).
- ``export``: a run's best model as TorchScript and ONNX with its preprocessing as metadata, parity checks, the command.
- ``exported``: an export read back (metadata) and run as a kit model (predict.py takes one instead of a run folder).
- ``model_card``: the ``MODEL_CARD.md`` written next to an export (data, licence, recipe, metrics, intended use).
- ``scoring``: which run folders are pending, evaluating them, reading their files back.
- ``external``: runs scored on another dataset used whole as a test set, and the drop from their own test split.
- ``stats``: bootstrap CIs, paired comparisons, Holm correction, the spread between seeds.
- ``failures``: what the worst test images have in common.
- ``image_factors``: per-image factors from pixels and mask (contrast, size, edge, dark frame, skin tone ITA,
  hair and ink), and a score's mean by group with bootstrap CIs.
- ``calibration``: Dice against the threshold, the reliability diagram and the calibration error.
- ``shipped``: the kit's three trained models on the bundled real images (their test scores, probabilities).
- ``challenge``: the ISIC 2018 challenge format (0/255 PNGs at original size) and its zip.
- ``exercises``: the check of notebook 04's code exercise (a bootstrap confidence interval).

Uses data, models and training; imports nothing from reporting.
"""
