"""How hard does the first Noether meta step pull on a trained world model?

    python benchmarks/noether_meta_start.py CHECKPOINT [--variants default frames_work]
        [--lrs 0.01 0.1 1 10 100] [--batches 3] [--set noether.embedding.width=16 ...]
        [--seed 0] [--g-seeds 0] [--out FILE.json]
    python benchmarks/noether_meta_start.py NOETHER_RUN_CHECKPOINT --own-g

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

The model's meta-gradient is also split into its first-order part (the outer loss's gradient at
the tailored parameters, the inner gradient held constant) and its second-order part (the rest:
the path through the inner step, which ``noether.model_second_order=false`` removes), reported
as the ratio of their norms and the cosine of the second-order part with the plain gradient
(negative: the path through the inner step pulls the model against its prediction loss).
``--own-g`` measures the same on a Noether run's checkpoint with its own trained g_φ and inner
lr: how the meta-gradient looks partway through meta-training.

Prints one row per variant, lr and g_φ seed (``--g-seeds``; mean, min and max over the
batches); ``--out`` writes them as JSON. Figures: docs/noether.md ("The first meta step, an
action-aware g, a longer context" and "The path through the inner step into the model").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import noether_control
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import training_data_settings
from noether_control.models.checkpoint import load_world_model, read_checkpoint
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.meta import NoetherModule, load_noether
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


def model_gradient(model: SVGWorldModel, loss: torch.Tensor) -> torch.Tensor:
    """``loss``'s gradient over ``model``'s weights, flattened into one vector."""
    weights = list(model.parameters())
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return torch.cat([(torch.zeros_like(w) if g is None else g).flatten()
                      for g, w in zip(grads, weights, strict=True)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine of the angle between two vectors (0 when either is zero)."""
    norms = float(a.norm() * b.norm())
    return float(a @ b) / norms if norms > 0 else 0.0


def candidates(args: argparse.Namespace, model: SVGWorldModel
               ) -> Iterator[tuple[str, float, str, NoetherModule]]:
    """``(variant, inner lr, g seed, g_φ)`` to measure, each with the second-order path into the
    model open: the checkpoint's own trained g_φ at its own inner lr (``--own-g``), else a fresh
    g_φ per variant, lr and seed."""
    if args.own_g:
        noether = load_noether(read_checkpoint(args.checkpoint, "cpu"), model)
        if noether is None:
            raise SystemExit(f"--own-g: expected a Noether run's checkpoint, got "
                             f"{args.checkpoint} (a plain model, no g_φ stored)")
        # the full meta-gradient, whether or not the run let it reach the model
        full = NoetherModule(replace(noether.config, model_second_order=True), model.config)
        full.load_state_dict(noether.state_dict())
        yield "own g", float(torch.as_tensor(full.lr()).detach()), "-", full.train()
        return
    for variant in args.variants:
        for lr in args.lrs:
            config = noether_config(variant, lr, args.overrides)
            for g_seed in args.g_seeds:
                torch.manual_seed(g_seed)  # the same random g_φ at every lr
                yield variant, lr, str(g_seed), NoetherModule(config, model.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--variants", nargs="+", default=["default", "frames_work"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides",
                        help="Hydra overrides of the train config, e.g. noether.embedding.width=16")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches")
    parser.add_argument("--g-seeds", nargs="+", type=int, default=[0],
                        help="seeds of the fresh random g_φ, one row each")
    parser.add_argument("--own-g", action="store_true",
                        help="measure a Noether run's checkpoint with its own trained g_φ and "
                             "inner lr instead of fresh ones (--variants, --lrs, --g-seeds unused)")
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

    def step(batch: dict[str, torch.Tensor], noether: NoetherModule | None
             ) -> tuple[float, torch.Tensor]:
        closed = torch.zeros(size, batch["frames"].shape[1], dtype=torch.bool)
        inputs = (batch["frames"], batch["actions"], n_past)
        if noether is None:
            out = model(*inputs, teacher=closed, reconstruct=reconstruct)
        else:
            out = noether.train_forward(model, *inputs, closed, None, reconstruct=reconstruct)[0]
        loss = compute_losses(out, batch, train_config)[0]
        return loss.item(), model_gradient(model, loss)

    plain = [step(batch, None) for batch in batches]
    rows: list[dict[str, Any]] = []
    print(f"{args.checkpoint}: {args.batches} training batches of {size}, closed loop; "
          f"plain loss {np.mean([p[0] for p in plain]):.4e}, "
          f"gradient {np.mean([float(p[1].norm()) for p in plain]):.4e}")
    print(f"{'variant':>16} {'inner lr':>9} {'g seed':>6} {'loss ratio (min, max)':>26} "
          f"{'gradient ratio (min, max)':>30} {'2nd/1st order':>13} {'cos(2nd, plain)':>15}")
    for variant, lr, g_seed, noether in candidates(args, model):
        config = noether.config
        frozen = NoetherModule(
            replace(config, inner=replace(config.inner, second_order=False)), model.config)
        frozen.load_state_dict(noether.state_dict())
        frozen.train()
        cells = []
        for batch, (plain_loss, plain_grad) in zip(batches, plain, strict=True):
            loss, full = step(batch, noether)
            second = full - step(batch, frozen)[1]
            cells.append((loss / plain_loss, float(full.norm() / plain_grad.norm()),
                          float(second.norm() / (full - second).norm()),
                          cosine(second, plain_grad)))
        loss_ratio, grad_ratio, split, angle = np.array(cells).T
        rows.append({"variant": variant, "inner_lr": lr, "g_seed": g_seed,
                     "loss_ratio": loss_ratio.tolist(), "gradient_ratio": grad_ratio.tolist(),
                     "second_over_first": split.tolist(), "cos_second_plain": angle.tolist()})
        print(f"{variant:>16} {lr:>9g} {g_seed:>6} {loss_ratio.mean():>10.3f} "
              f"({loss_ratio.min():.3f}, {loss_ratio.max():.3f}) "
              f"{grad_ratio.mean():>13.2f} ({grad_ratio.min():.2f}, "
              f"{grad_ratio.max():.2f}) {split.mean():>13.2f} {angle.mean():>15.2f}")
    if args.out:
        args.out.write_text(json.dumps({
            "checkpoint": args.checkpoint, "batches": args.batches,
            "plain": [(loss, float(grad.norm())) for loss, grad in plain], "rows": rows,
        }, indent=1))

if __name__ == "__main__":
    main()
