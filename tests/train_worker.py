"""One training run in its own process, for the SIGKILL-resume and torchrun tests.

    python tests/train_worker.py --prepared DIR --results DIR --epochs 3 [--hang-at-step N] [--checkpoint-minutes M]
        [--ema-epochs E]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/train_worker.py ...

It calls the real ``helpers.training.engine.fit`` on a tiny UNet. ``--hang-at-step N`` wraps the loss so
that the N-th training step (counted in this process) writes ``<results>/hanging`` and then
sleeps inside the step, so the test can SIGKILL the process at a known point in an epoch.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers.data.prep import load_prepared  # noqa: E402
from helpers.profiles import resolve_config  # noqa: E402
from helpers.training import engine, runs, state  # noqa: E402
from helpers.training.losses import DiceBCELoss  # noqa: E402


class HangAt(DiceBCELoss):
    """Dice+BCE that stops the process (sleeping) inside training step ``step``."""

    def __init__(self, step: int, marker: Path):
        super().__init__()
        self.step, self.marker, self.calls = step, marker, 0

    def forward(self, logits, masks):
        if torch.is_grad_enabled():  # training steps only, not validation
            self.calls += 1
            if self.calls == self.step:
                self.marker.write_text(str(os.getpid()))
                time.sleep(600)
        return super().forward(logits, masks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-at-step", type=int, default=0)
    parser.add_argument("--checkpoint-minutes", type=float, default=None)
    parser.add_argument("--ema-epochs", type=float, default=0.0, help="keep a moving average of the weights")
    parser.add_argument("--groupnorm", action="store_true", help="GroupNorm in place of BatchNorm")
    args = parser.parse_args()
    if args.groupnorm:  # batch statistics differ per process on the CPU (no SyncBatchNorm there)
        torch.nn.BatchNorm2d = lambda channels: torch.nn.GroupNorm(1, channels)
    os.environ["KIT_RESULTS_DIR"] = args.results
    torch.set_num_threads(1)
    state.seed_everything(args.seed, deterministic=True)
    prepared = load_prepared(args.prepared)
    config = resolve_config("smoke", image_size=prepared.images.shape[1], batch_size=args.batch_size,
                            num_epochs=args.epochs, split_seed=prepared.manifest["seed"],
                            ema_epochs=args.ema_epochs)
    spec = runs.make_spec(args.model, 1.0, args.seed, prepared, config)
    if args.hang_at_step:  # the run's loss, wrapped so that this process stops inside that step
        state.DiceBCELoss = lambda: HangAt(args.hang_at_step, Path(args.results) / "hanging")
    result = engine.fit(spec, prepared, checkpoint_minutes=args.checkpoint_minutes, keep_last=True, progress=False)
    sys.stdout.write(f"RESULT {result['status']} {result['best_val_dice']}\n")  # one write: ranks do not interleave
    sys.stdout.flush()


if __name__ == "__main__":
    main()
