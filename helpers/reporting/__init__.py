"""Reporting: tables, figures, the report, the interactive viewer and study snapshots (notebook 04; notebooks
01-03 draw their pictures with ``figures``).

- ``tables``: ``summary.csv`` (one row per run folder) and ``comparisons.csv`` (paired model comparisons).
- ``figures``: every plot of the kit (galleries, data efficiency, distributions, training curves).
- ``diagrams``: a model's inside drawn from the model (UNet++'s grid of nodes) and where TransUNet's attention goes
  (notebook 03).
- ``evidence``: notebook 04's figures of Dice by image factor and skin tone, the threshold and calibration.
- ``failure_report``: the report's failure section and its worst-cases figure.
- ``report``: ``report.md`` from the run folders, with the original study's figures labelled as reference.
- ``viewer``: the ipywidgets prediction viewer.
- ``snapshot``: a study's results copied into ``results/<study>/`` to commit (``python -m helpers.reporting.snapshot``).

The top layer: it may use every other one, and nothing below imports it.
"""
