"""Training: the loss and metrics, the one training loop, resume and checkpoints, run folders, devices
(notebooks 02 and 03; ``python -m helpers.training`` and ``torchrun -m helpers.training``).

- ``losses``: 0.5·Dice + 0.5·BCE in fp32, deep-supervision aware.
- ``metrics``: per-image confusion counts and the scores built from them (validation and evaluation).
- ``devices``: device, mixed-precision dtype, hardware label, torchrun process groups.
- ``checkpoints``: atomic checkpoint files with a previous copy and a fallback folder.
- ``runs``: :class:`~helpers.training.runs.RunSpec`, run ids, run folders, loading a run back.
- ``averaging``: an exponential moving average of the weights (``ema_epochs``), validated and kept as best.pt.
- ``state``: building a run from its spec: model, loaders, optimizer, schedule, scaler, its config.json record.
- ``loop``: ``train_one_epoch`` and ``validate``, the loop a student reads (plain torch objects, hooks).
- ``checkpointer``: the one object the engine calls to resume, checkpoint (Drive copies) and record a run.
- ``engine``: ``fit`` — one run, trained, resumed or skipped, around the loop through its hooks.
- ``grid``: ``run_grid`` — models × fractions × seeds — and the command line.
- ``claims``: one worker per run when several share a grid (a claim file with a heartbeat; ``--shard``).
- ``stops``: stopping a run from outside its loop (SIGTERM or SIGUSR1, or a claim another worker took).
- ``live``: training curves redrawn after every epoch in a notebook.
- ``tensorboard``: each run's TensorBoard event files (history.csv's numbers, a few predictions), where installed.
- ``exercises``: the checks of the exercises in which the student writes code (right, not yet, not done yet).
- ``model_exercises``: the checks of notebooks 02 and 03's code exercises (Dice from counts, a pruned UNet++).

Uses data and models; imports nothing from evaluation or reporting.
"""
