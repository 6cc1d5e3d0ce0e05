"""The original study's own reported figures: the one place they live (the report and its figures label them
as reference; they are never mixed with the kit's results)."""

# The original study's own per-image test Dice (seed protocol, 256 px, ISIC 2018 training set, Colab T4).
REFERENCE_DICE = {"unet": {0.10: 0.7548, 0.25: 0.8019, 0.50: 0.8377, 1.00: 0.8589},
                  "unetpp": {0.10: 0.7288, 0.25: 0.8038, 0.50: 0.8415, 1.00: 0.8608}}
REFERENCE_NOTES = """\
- UNet++ at 100 %: Dice 0.8608 ± 0.167, IoU 0.7831 ± 0.191, pixel accuracy 0.9493 (per image, mean ± std).
- Setup: ISIC 2018 Task 1 training set (2,594 images), 256 × 256, random 70/15/15 split; AdamW (lr 1e-4,
  weight decay 1e-4), cosine annealing, 20 epochs, batch 20–24, fp16, loss 0.5·Dice + 0.5·BCE.
- Time on a Colab T4: about 45 min per 100 % run, 25 min at 50 %, 15 min at 25 %, 8 min at 10 %
  (about 5 hours for all eight); inference 50–60 ms per image.
- Its claimed model sizes (UNet 31 M, UNet++ 9 M, TransUNet 105 M) did not match its code; TransUNet
  was trained from scratch and never finished, so there is no reference for it. It reported no
  challenge metric (thresholded Jaccard) and no confidence intervals, and compared models by eye."""
