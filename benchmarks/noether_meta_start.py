"""How hard does the first Noether meta step pull on a trained world model?

    python benchmarks/noether_meta_start.py CHECKPOINT [--variants default frames_work]
        [--lrs 0.01 0.1 1 10 100] [--batches 3] [--set noether.embedding.width=16 ...]
        [--seed 0] [--out FILE.json]

Meta-training from a trained checkpoint (``noether.init_from``) starts with a fresh, random
g_φ and the ``noether`` group's inner lr. One inner step at that lr changes the prediction the
outer loss is taken on, and the outer gradient then runs through the inner step (second order)
into the model. If that path dominates the prediction loss's own gradient, the clipped Adam
update follows it and the model moves away from what it had learned before g_φ has learned
anything. This script measures it before any training: on ``--batches`` training batches of the
checkpoint's own data, windows and loss weights (closed loop after the context, as at the end of
a scheduled rollout), for every variant (a ``noether`` config group) and inner lr, one meta
step's loss and gradient norm over the model's weights, each divided by the plain training
step's. A loss ratio above 1 means the random g_φ's inner step already harms the batch; a
gradient ratio far above 1 means the update is the inner step's, not the prediction's. With
the inner lr → 0 both ratios are 1 exactly (the meta step equals the plain step).

Prints one row per variant and lr (mean, min and max over the batches); ``--out`` writes them as
JSON. Figures: docs/noether.md ("The first meta step on a trained model").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import noether_control
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import training_data_settings
from noether_control.models.checkpoint import load_world_model
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.meta import NoetherModule
from noether_control.runtime import to_dataclass
from noether_control.training.config import TrainCommandConfig
from noether_control.training.train import collate, compute_losses

TRAIN_CONF = Path(noether_control.__file__).resolve().parent / "conf" / "commands" / "train"


def noether_config(variant: str, lr: float, overrides: list[str]) -> NoetherConfig:
    """The ``noether`` group ``variant`` as ``train`` composes it, with inner lr ``lr``."""
    with initialize_config_dir(str(TRAIN_CONF), version_base="1.3"):
        composed = compose("train", overrides=[
            "data.path=unused", f"noether={variant}", f"noether.inner.lr={lr}", *overrides])
    return to_dataclass(TrainCommandConfig, composed).noether


def gradient_norm(model: SVGWorldModel, loss: torch.Tensor) -> float:
    """The norm of ``loss``'s gradient over ``model``'s weights."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--variants", nargs="+", default=["default", "frames_work"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides",
                        help="Hydra overrides of the train config, e.g. noether.embedding.width=16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.batches < 1:
        parser.error(f"--batches: expected >= 1, got {args.batches}")
    torch.set_num_threads(1)

    model, stored = load_world_model(args.checkpoint)
    train_config = to_dataclass(TrainCommandConfig, stored)
    settings = training_data_settings(stored, None)
    n_past, size = train_config.data.n_past, train_config.train.batch_size
    data = EpisodeWindows(settings.path, train_config.data.window, split="train", stride=1,
                          split_fractions=settings.split_fractions, seed=settings.split_seed)
    rng = np.random.default_rng(args.seed)
    batches = []
    for _ in range(args.batches):
        batches.append(collate([data[int(i)] for i in rng.choice(len(data), size, replace=False)]))
    model.train()
    reconstruct = train_config.train.recon_weight > 0

    def step(batch: dict[str, torch.Tensor], noether: NoetherModule | None) -> tuple[float, float]:
        closed = torch.zeros(size, batch["frames"].shape[1], dtype=torch.bool)
        inputs = (batch["frames"], batch["actions"], n_past)
        if noether is None:
            out = model(*inputs, teacher=closed, reconstruct=reconstruct)
        else:
            out = noether.train_forward(model, *inputs, closed, None, reconstruct=reconstruct)[0]
        loss = compute_losses(out, batch, train_config)[0]
        return loss.item(), gradient_norm(model, loss)

    plain = [step(batch, None) for batch in batches]
    rows: list[dict[str, Any]] = []
    print(f"{args.checkpoint}: {args.batches} training batches of {size}, closed loop; "
          f"plain loss {np.mean([p[0] for p in plain]):.4e}, "
          f"gradient {np.mean([p[1] for p in plain]):.4e}")
    print(f"{'variant':>16} {'inner lr':>9} {'loss ratio (min, max)':>26} "
          f"{'gradient ratio (min, max)':>30}")
    for variant in args.variants:
        for lr in args.lrs:
            config = noether_config(variant, lr, args.overrides)
            torch.manual_seed(args.seed)  # the same random g_φ at every lr
            noether = NoetherModule(config, model.config)
            ratios = np.array([np.divide(step(batch, noether), base)
                               for batch, base in zip(batches, plain, strict=True)])
            loss, grad = ratios[:, 0], ratios[:, 1]
            rows.append({"variant": variant, "inner_lr": lr, "loss_ratio": loss.tolist(),
                         "gradient_ratio": grad.tolist()})
            print(f"{variant:>16} {lr:>9g} {loss.mean():>10.3f} ({loss.min():.3f}, "
                  f"{loss.max():.3f}) {grad.mean():>13.2f} ({grad.min():.2f}, {grad.max():.2f})")
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": args.checkpoint, "batches": args.batches,
                                        "plain": plain, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
