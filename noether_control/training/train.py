"""``noether-control train``: fit the action-conditioned SVG world model to a collected dataset.

Reads top to bottom: config → process group → seeding → data → model → resume → loop → results.
Every random choice of a step (which windows, scheduled-sampling coins, SVG-LP noise) is drawn
from a generator seeded by ``(seed, step)``, for the whole global batch, and each process takes
its slice: a resumed run replays exactly the batches it would have seen, and N processes see the
same global batch as one. Outputs, in the run directory::

    checkpoints/step_NNNNNNN.pt, checkpoints/last.pt   (see noether_control.models.checkpoint)
    metrics.csv, tensorboard/                          (train/*, eval/* scalars)
    predictions/step_NNNNNNN.png                       (ground truth over closed-loop prediction)
    results.json                                       (final losses, throughput, checkpoint)

A run resumes from ``checkpoints/last.pt`` of its run directory (``hydra.run.dir=...``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from noether_control.models.checkpoint import load_state_checked, read_checkpoint, save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel, TrainOutput, reward_loss
from noether_control.noether.meta import NoetherModule
from noether_control.runtime import (
    resolve_device,
    run_dir,
    seed_everything,
    to_dataclass,
    write_json,
)
from noether_control.training import distributed
from noether_control.training.config import (
    OptimConfig,
    TrainCommandConfig,
    dynamics_learning_rate,
    learning_rate,
    resume_mismatches,
)
from noether_control.training.dynamics import (
    check_windows_fit,
    dynamics_losses,
    encode_episodes,
    predictor_parameters,
)
from noether_control.training.logs import MetricLog, save_strip
from noether_control.training.warm_start import init_from_baseline

#: Independent random streams derived from the run seed.
STREAM_BATCH, STREAM_TEACHER, STREAM_NOISE, STREAM_DYNAMICS = 0, 1, 2, 3


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss or gradient; the last good checkpoint is left intact."""


def stream_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, stream, index)`` alone."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def global_batch_indices(n_items: int, batch_size: int, seed: int, step: int,
                         stream: int = STREAM_BATCH) -> torch.Tensor:
    """Window indices ``(batch_size,)`` of global step ``step``: epochs of seeded permutations.

    Step ``s`` takes positions ``s·B … s·B + B - 1`` of the endless sequence formed by
    concatenating one permutation of ``range(n_items)`` per epoch, so every window is seen once
    per epoch and the batch depends only on ``(seed, step)``.
    """
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // n_items
    indices = torch.empty(batch_size, dtype=torch.long)
    for epoch in torch.unique(epochs).tolist():
        permutation = torch.randperm(n_items, generator=stream_generator(seed, stream, epoch))
        chosen = epochs == epoch
        indices[chosen] = permutation[positions[chosen] % n_items]
    return indices


class StepBatches(Sampler[list[int]]):
    """This process's slice of each global batch, for steps ``start … end - 1``."""

    def __init__(
        self, n_items: int, batch_size: int, seed: int, start: int, end: int,
        job: distributed.Distributed,
    ) -> None:
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start, self.end, self.job = start, end, job
        self.local = batch_size // job.world_size

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            indices = global_batch_indices(self.n_items, self.batch_size, self.seed, step)
            yield indices[self.job.rank * self.local : (self.job.rank + 1) * self.local].tolist()

    def __len__(self) -> int:
        return self.end - self.start


def teacher_probability(optim: OptimConfig, step: int) -> float:
    """Probability of feeding the true frame after the context at ``step`` (0-based)."""
    if optim.rollout == "teacher":
        return 1.0
    if optim.rollout == "closed":
        return 0.0
    return max(0.0, 1.0 - step / optim.schedule_steps)


def step_randomness(
    config: TrainCommandConfig, step: int, length: int, job: distributed.Distributed
) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """This process's teacher mask ``(b, T)`` bool, SVG-LP noise ``(b, T-1, z)``, probability.

    Drawn for the global batch from ``(seed, step)`` and sliced, so they do not depend on the
    number of processes.
    """
    optim, batch = config.train, config.train.batch_size
    local = slice(job.rank * batch // job.world_size, (job.rank + 1) * batch // job.world_size)
    probability = teacher_probability(optim, step)
    mask = None
    if optim.rollout != "teacher":
        coins = torch.rand(batch, length, generator=stream_generator(config.seed, STREAM_TEACHER,
                                                                     step))
        mask = (coins < probability)[local]
    noise = None
    if config.model.stochastic:
        generator = stream_generator(config.seed, STREAM_NOISE, step)
        noise = torch.randn(batch, length - 1, config.model.z_dim, generator=generator)[local]
    return mask, noise, probability


def compute_losses(
    out: TrainOutput, batch: dict[str, torch.Tensor], config: TrainCommandConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (scalar, mean over the local batch) and detached per-term metrics.

    Frame MSE is over predicted frames ``1 … T-1`` and pixels; the reward loss is on the rewards
    of actions ``0 … T-2``; the state loss on the states of frames ``1 … T-1``.
    """
    optim = config.train
    frames = batch["frames"]
    frame_mse = ((out.frames.float() - frames[:, 1:]) ** 2).mean()
    future_mse = ((out.frames[:, config.data.n_past - 1 :].float()
                   - frames[:, config.data.n_past :]) ** 2).mean()
    total = frame_mse
    metrics = {"train/frame_mse": frame_mse, "train/future_mse": future_mse}
    if config.model.reward_head:
        reward_mse = reward_loss(out.rewards.float(), batch["rewards"][:, :-1],
                                 config.model.reward_output)
        total = total + optim.reward_weight * reward_mse
        metrics["train/reward_mse"] = reward_mse
    if out.states is not None:
        state_mse = ((out.states.float() - batch["states"][:, 1:]) ** 2).mean()
        total = total + optim.state_weight * state_mse
        metrics["train/state_mse"] = state_mse
    if config.model.stochastic:
        kl = out.kl.float().mean() / (frames.shape[1] - 1)
        total = total + optim.kl_weight * kl
        metrics["train/kl"] = kl
    if optim.recon_weight > 0 and out.reconstructions is not None:
        recon_mse = ((out.reconstructions.float() - frames) ** 2).mean()
        total = total + optim.recon_weight * recon_mse
        metrics["train/recon_mse"] = recon_mse
    if optim.latent_weight > 0 and out.codes is not None and out.predicted_codes is not None:
        latent_mse = ((out.predicted_codes.float() - out.codes[:, 1:].detach().float()) ** 2).mean()
        total = total + optim.latent_weight * latent_mse
        metrics["train/latent_mse"] = latent_mse
    metrics["train/loss"] = total
    return total, {name: value.detach() for name, value in metrics.items()}


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain data (safe for ``torch.load(weights_only=True)``)."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def open_windows(config: TrainCommandConfig, split: str, stride: int) -> Dataset:
    """``EpisodeWindows`` of ``config.data`` for ``split``; the training split with their mirror
    images too when ``data.mirror``."""
    from noether_control.data.windows import EpisodeWindows, MirroredWindows

    data = config.data
    windows = EpisodeWindows(
        data.path, data.window, split, stride=stride,
        split_fractions=tuple(data.split_fractions), seed=data.split_seed,
    )
    return MirroredWindows(windows) if data.mirror and split == "train" else windows


def model_config_for(config: TrainCommandConfig, dataset: Any) -> SVGConfig:
    """The model config with its data-dependent fields taken from ``dataset``."""
    return replace(
        config.model,
        image_size=int(dataset.image_size),
        channels=int(dataset.channels),
        action_dim=int(dataset.action_dim),
        state_dim=int(getattr(dataset, "state_dim", 0)),
    )


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of window dicts into a batch dict (leading dimension ``B``)."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@torch.no_grad()
def validate(
    model: SVGWorldModel, windows: list[dict[str, torch.Tensor]], config: TrainCommandConfig,
    device: torch.device,
) -> dict[str, float]:
    """Closed-loop MSE per horizon on fixed validation windows: mean and last horizon."""
    model.eval()
    n_past, n_future = config.data.n_past, config.data.n_future
    errors = []
    for start in range(0, len(windows), config.train.batch_size):
        batch = collate(windows[start : start + config.train.batch_size])
        frames = batch["frames"].to(device)
        predicted = model.predict(frames[:, :n_past], batch["actions"].to(device), n_future)
        errors.append(((predicted - frames[:, n_past:]) ** 2).mean(dim=(2, 3, 4)))
    model.train()
    per_horizon = torch.cat(errors).mean(dim=0)
    return {"eval/mse": per_horizon.mean().item(), f"eval/mse_h{n_future}": per_horizon[-1].item()}


def resolved_config(config: TrainCommandConfig, model_config: SVGConfig) -> dict[str, Any]:
    """The run's resolved config as a plain dict, with the model's data-derived fields filled."""
    resolved = asdict(config)
    resolved["model"] = asdict(model_config)
    resolved["data"]["split_fractions"] = list(config.data.split_fractions)
    return resolved


def train_world_model(
    config: TrainCommandConfig,
    out_dir: Path,
    *,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
) -> dict[str, Any]:
    """Train (or resume) in ``out_dir``; return the summary also written to ``results.json``.

    ``train_set``/``val_set`` default to ``EpisodeWindows`` of ``config.data`` (train split with
    ``data.stride``, val split with non-overlapping windows); pass any dataset with the same
    item layout and ``image_size``/``channels``/``action_dim``/``state_dim`` attributes to
    train on something else. Raises :class:`NonFiniteLossError` on a NaN/inf loss or gradient.
    """
    config.validate()
    device = resolve_device(config.device)
    job = distributed.setup(device)
    try:
        return _train(config, Path(out_dir), job, train_set, val_set)
    finally:
        distributed.teardown(job)


def _train(
    config: TrainCommandConfig,
    out_dir: Path,
    job: distributed.Distributed,
    train_set: Dataset | None,
    val_set: Dataset | None,
) -> dict[str, Any]:
    optim_config, device = config.train, job.device
    _check_process_split(optim_config, job)
    out_dir = Path(distributed.broadcast_object(job, str(out_dir)))
    last = out_dir / "checkpoints" / "last.pt"
    seed_everything(config.seed)
    train_set, val_set = _open_splits(config, job, train_set, val_set)
    model_config = model_config_for(config, train_set)
    resolved = resolved_config(config, model_config)

    torch.manual_seed(config.seed)
    model, noether, optimizer, meta_groups = _build(config, model_config, device)
    dataset = train_set.fingerprint() if hasattr(train_set, "fingerprint") else None
    start, dynamics_start, stored_metrics = _restore(
        config, job, last, model, noether, optimizer, resolved, dataset)
    ddp_model: torch.nn.Module = model
    if job.enabled:
        ddp_model = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )

    total_steps = optim_config.steps
    loader = _step_loader(config, train_set, start, job)
    fixed_val = (
        [val_set[i] for i in range(min(len(val_set), optim_config.val_windows))]
        if val_set is not None and optim_config.val_windows > 0
        else []
    )
    if optim_config.dynamics_steps > dynamics_start:
        _check_dynamics_windows(config, train_set)
    strip_source = val_set if val_set is not None else train_set
    # The dynamics phase counts its own steps; logs and the progress bar count all updates.
    dynamics_end = max(optim_config.dynamics_steps, dynamics_start)
    book = _Bookkeeping(
        config, job, out_dir, model, optimizer, resolved, noether, dataset=dataset,
        strip_windows=[strip_source[i] for i in range(min(4, len(strip_source)))],
        fixed_val=fixed_val, first_update=start + dynamics_start,
        last_update=max(total_steps, start) + dynamics_end,
    )
    # the last measurements so far, for results.json should no step be left to run
    book.summary.update(stored_metrics)
    autocast = _autocast(optim_config, device)
    try:
        step = _joint_phase(config, job, loader, model, ddp_model, noether, optimizer,
                            meta_groups, book, autocast, start, dynamics_start)
        if dynamics_start < optim_config.dynamics_steps:
            _dynamics_phase(model, optimizer, config, job, train_set, book, autocast, step,
                            dynamics_start)
    finally:
        book.close()

    if start >= total_steps and dynamics_start >= optim_config.dynamics_steps and job.is_main:
        print(f"train: {last} is at step {start} ≥ train.steps={total_steps}; nothing to do")
    results = {
        "steps": step,
        "dynamics_steps": max(optim_config.dynamics_steps, dynamics_start),
        "checkpoint": str(last),
        "train": book.summary.get("train", {}),
        "eval": book.summary.get("eval", {}),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "processes": job.world_size,
        "device": str(device),
    }
    if job.is_main:
        write_json(out_dir / "results.json", results)
    return results


def _step_loader(config: TrainCommandConfig, train_set: Dataset, start: int,
                 job: distributed.Distributed) -> DataLoader:
    """The training windows of joint steps ``start … train.steps - 1``, each step's batch drawn
    from ``(seed, step)`` (so a resumed run sees the batches an uninterrupted one would)."""
    return DataLoader(
        train_set,
        batch_sampler=StepBatches(len(train_set), config.train.batch_size, config.seed, start,
                                  config.train.steps, job),
        collate_fn=collate,
        num_workers=config.data.num_workers,
        pin_memory=job.device.type == "cuda",
    )


def _autocast(optim_config: OptimConfig, device: torch.device
              ) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on a GPU with ``train.amp`` (it needs no loss scaling); GPUs without
    bfloat16 (pre-Ampere) and CPUs train in float32."""
    if device.type == "cuda" and optim_config.amp and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_process_split(optim_config: OptimConfig, job: distributed.Distributed) -> None:
    """Equal slices per process, so that averaging their gradients is the one-process
    gradient."""
    for key in ("batch_size", "dynamics_batch_size"):
        if getattr(optim_config, key) % job.world_size:
            raise ValueError(
                f"train.{key}: expected a multiple of the {job.world_size} processes, got "
                f"{getattr(optim_config, key)}"
            )


def _open_splits(
    config: TrainCommandConfig, job: distributed.Distributed, train_set: Dataset | None,
    val_set: Dataset | None,
) -> tuple[Dataset, Dataset | None]:
    """The training windows and (when ``train.val_windows`` > 0 and the data has a val split)
    the validation windows: the given ones, else the dataset's."""
    if train_set is None:
        train_set = open_windows(config, "train", config.data.stride)
    if val_set is None and config.train.val_windows > 0:
        try:
            val_set = open_windows(config, "val", config.data.window)
        except ValueError as error:  # e.g. too few episodes for a val split
            if job.is_main:
                print(f"train: no validation ({error})")
    if len(train_set) < 1:
        raise ValueError(f"training set: expected at least one window, got {len(train_set)}")
    return train_set, val_set


def _build(
    config: TrainCommandConfig, model_config: SVGConfig, device: torch.device
) -> tuple[SVGWorldModel, NoetherModule | None, torch.optim.Optimizer,
           dict[str, list[torch.nn.Parameter]]]:
    """The world model, g_φ (Noether runs), Adam over both, and the parameter groups whose
    gradient norms a meta step reports."""
    model = SVGWorldModel(model_config).to(device)
    noether = (NoetherModule(config.noether, model_config).to(device)
               if config.noether.enabled else None)
    # g_φ in its own group after the model's, so a baseline's Adam state extends to it.
    groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    if noether is not None:
        groups.append({"params": list(noether.parameters()),
                       "lr_scale": config.noether.embedding_lr_scale})
    optimizer = torch.optim.Adam(groups, lr=config.train.lr)
    meta_groups = {"model": list(model.parameters())}
    if noether is not None:
        meta_groups["embedding"] = list(noether.embedding.parameters())
        if noether.inner_lr is not None:
            meta_groups["inner_lr"] = list(noether.inner_lr.parameters())
    return model, noether, optimizer, meta_groups


def _restore(
    config: TrainCommandConfig, job: distributed.Distributed, last: Path, model: SVGWorldModel,
    noether: NoetherModule | None, optimizer: torch.optim.Optimizer, resolved: dict[str, Any],
    dataset: str | None,
) -> tuple[int, int, dict[str, Any]]:
    """Resume from ``last`` (this run's own checkpoint), else start from ``noether.init_from``
    or ``train.init_from``, else from scratch. Returns the joint step, the dynamics step and the
    stored metrics to start from."""
    if last.exists():
        payload = read_checkpoint(last, "cpu")
        mismatches = resume_mismatches(payload["config"], resolved)
        if mismatches:
            raise ValueError(
                f"cannot resume from {str(last)!r}: its config differs from this run's "
                f"({'; '.join(mismatches)}); use a new run directory or the same settings"
            )
        load_state_checked(model, payload["model"], f"checkpoint {str(last)!r}")
        if noether is not None:
            noether.load_state_dict(payload["extra"]["noether"]["state"])
        trained_on = payload["extra"].get("dataset")
        if trained_on is not None and dataset is not None and trained_on != dataset:
            raise ValueError(
                f"cannot resume from {str(last)!r}: it was trained on other episodes than "
                f"data.path={config.data.path!r} holds (their fingerprints differ); data.path "
                "may change on resume only to a copy of the same dataset; use a new run directory"
            )
        optimizer.load_state_dict(payload["optimizer"])
        start = int(payload["step"])
        dynamics_start = int(payload["extra"].get("dynamics_step", 0))
        restore_rng(payload["rng"])
        if job.is_main:
            print(f"train: resuming from {last} at step {start}"
                  + (f", dynamics step {dynamics_start}" if dynamics_start else ""))
        return start, dynamics_start, payload["extra"].get("metrics", {})
    start = 0
    if noether is not None and config.noether.init_from:
        start = init_from_baseline(config.noether.init_from, model, optimizer)
        if job.is_main:
            print(f"train: meta-training from {config.noether.init_from} at step {start}")
    elif config.train.init_from:
        start = init_from_baseline(config.train.init_from, model, optimizer, "train.init_from")
        if job.is_main:
            print(f"train: continuing {config.train.init_from} from step {start}")
    return start, 0, {}


def _check_dynamics_windows(config: TrainCommandConfig, train_set: Dataset) -> None:
    """The dynamics phase encodes whole training episodes into windows of its own length."""
    if not hasattr(train_set, "episode"):
        raise ValueError(
            "train.dynamics_steps: the dynamics phase encodes whole training episodes; "
            "expected a training set with episode_ids, episode_lengths and episode() "
            f"(EpisodeWindows), got {type(train_set).__name__}"
        )
    check_windows_fit(train_set, config.data.n_past + config.train.dynamics_horizon)


def _joint_phase(
    config: TrainCommandConfig, job: distributed.Distributed, loader: DataLoader,
    model: SVGWorldModel, ddp_model: torch.nn.Module, noether: NoetherModule | None,
    optimizer: torch.optim.Optimizer, meta_groups: dict[str, list[torch.nn.Parameter]],
    book: _Bookkeeping, autocast: Any, start: int, dynamics_start: int,
) -> int:
    """Train encoder, predictor and decoder together (plain steps, then, for Noether runs,
    meta steps from ``noether.pretrain_steps`` on) from ``start``; returns the last step."""
    optim_config, device = config.train, job.device
    length = config.data.window
    step = start
    for batch in loader:
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        mask, noise, probability = step_randomness(config, step, length, job)
        meta = noether is not None and step >= config.noether.pretrain_steps
        # The meta step differentiates through the inner gradient step: in bfloat16 that
        # second-order signal is rounded away, so it always runs in float32.
        with contextlib.nullcontext() if meta else autocast:
            inputs = (batch["frames"], batch["actions"], config.data.n_past)
            teacher = None if mask is None else mask.to(device)
            noise = None if noise is None else noise.to(device)
            if meta:
                out, noether_metrics = noether.train_forward(
                    model, *inputs, teacher, noise,
                    reconstruct=optim_config.recon_weight > 0,
                )
            else:
                out = ddp_model(
                    *inputs, teacher=teacher, noise=noise,
                    reconstruct=optim_config.recon_weight > 0,
                )
                noether_metrics = {}
            loss, metrics = compute_losses(out, batch, config)
            metrics.update(noether_metrics)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        lr = learning_rate(optim_config, step)
        # the meta step bypasses DDP's gradient hooks: average its gradients explicitly
        grad_norm, group_norms = _update(
            loss, parameters, optimizer, lr, optim_config, job, f"step {step + 1}",
            book.last, average=meta, norms_of=meta_groups if meta else None)
        metrics.update(group_norms)
        step += 1
        metrics["train/teacher_probability"] = grad_norm.new_tensor(probability)
        book.after_update(metrics, grad_norm, lr, optim_config.batch_size, step,
                          dynamics_start, phase_step=step, phase_end=optim_config.steps)
    return step


def _update(
    loss: torch.Tensor, parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
    lr: float, optim: OptimConfig, job: distributed.Distributed, where: str, last: Path,
    *, average: bool, norms_of: Mapping[str, list[torch.nn.Parameter]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backward, (``average``: all-reduce gradients), clip, step at ``lr``.

    Returns the gradient norm before clipping and, for each named group of ``norms_of``, its
    own gradient norm before clipping as ``train/grad_norm_NAME`` (how much of the update each
    part of a meta step drives).

    Raises :class:`NonFiniteLossError` on a non-finite loss or gradient norm, before any
    parameter changes, naming ``where`` and the last good checkpoint.
    """
    global_loss = distributed.mean_over_processes(job, loss.detach()).item()
    if not math.isfinite(global_loss):
        raise NonFiniteLossError(
            f"non-finite loss ({global_loss}) at {where}; training stopped. The last good "
            f"checkpoint is {_describe_last(last)}; lower the learning rate or check the data "
            "for NaNs"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if average:
        distributed.average_gradients(parameters)
    group_norms = {
        f"train/grad_norm_{name}": torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad.detach()) if p.grad is not None
             else loss.new_zeros(()) for p in group] or [loss.new_zeros(())]))
        for name, group in (norms_of or {}).items()
    }
    max_norm = optim.grad_clip if optim.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if not torch.isfinite(grad_norm):
        raise NonFiniteLossError(
            f"non-finite gradient norm at {where}; training stopped. The last good checkpoint "
            f"is {_describe_last(last)}; lower the learning rate"
        )
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.step()
    return grad_norm, group_norms


def _dynamics_phase(
    model: SVGWorldModel, optimizer: torch.optim.Optimizer, config: TrainCommandConfig,
    job: distributed.Distributed, source: Any, book: _Bookkeeping,
    autocast: contextlib.AbstractContextManager, step: int, start: int,
) -> None:
    """Dynamics steps ``start … train.dynamics_steps - 1`` (see ``training/dynamics.py``).

    The batch of dynamics step ``d`` is drawn for the global batch from ``(seed, d)`` and
    sliced per process, like the joint steps' batches; the encoder and decoder get no gradient
    and so are not updated.
    """
    optim, n_past = config.train, config.data.n_past
    episodes = encode_episodes(model, source, n_past + optim.dynamics_horizon, job.device)
    if job.is_main:
        print(f"train: dynamics phase on {len(episodes.starts)} code windows of "
              f"{episodes.length} steps, from step {start} of {optim.dynamics_steps}")
    parameters = predictor_parameters(model)
    batch = optim.dynamics_batch_size
    local = slice(job.rank * batch // job.world_size, (job.rank + 1) * batch // job.world_size)
    for dynamics_step in range(start, optim.dynamics_steps):
        indices = global_batch_indices(len(episodes.starts), batch, config.seed, dynamics_step,
                                       STREAM_DYNAMICS)[local]
        with autocast:
            loss, metrics = dynamics_losses(model, episodes.windows(indices.to(job.device)),
                                            n_past, optim.reward_weight, optim.state_weight)
        lr = dynamics_learning_rate(optim, dynamics_step)
        grad_norm, _ = _update(loss, parameters, optimizer, lr, optim, job,
                               f"dynamics step {dynamics_step + 1}", book.last, average=True)
        book.after_update(metrics, grad_norm, lr, batch, step, dynamics_step + 1,
                          phase_step=dynamics_step + 1, phase_end=optim.dynamics_steps)


class _Bookkeeping:
    """Metric rows, the progress bar, prediction strips, validation and checkpoints, after
    every update of either phase (rank 0 writes; every rank joins the checkpoint barrier)."""

    def __init__(
        self, config: TrainCommandConfig, job: distributed.Distributed, out_dir: Path,
        model: SVGWorldModel, optimizer: torch.optim.Optimizer, resolved: dict[str, Any],
        noether: NoetherModule | None, *, dataset: str | None,
        strip_windows: list[dict[str, torch.Tensor]], fixed_val: list[dict[str, torch.Tensor]],
        first_update: int, last_update: int,
    ) -> None:
        self.config, self.job, self.out_dir = config, job, out_dir
        self.model, self.optimizer, self.noether = model, optimizer, noether
        self.resolved, self.dataset = resolved, dataset
        self.strip_windows, self.fixed_val = strip_windows, fixed_val
        self.checkpoints = out_dir / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        optim = config.train
        self.log = (MetricLog(out_dir, tensorboard=optim.tensorboard, resume_step=first_update)
                    if job.is_main else None)
        self.progress = None
        if job.is_main and optim.progress:
            from tqdm import tqdm

            self.progress = tqdm(total=last_update, initial=first_update, desc="train",
                                 dynamic_ncols=True)
        self.summary: dict[str, Any] = {"eval": {}}
        self.window_sum: dict[str, torch.Tensor] = {}
        self.window_steps, self.window_start = 0, time.perf_counter()

    def after_update(
        self, metrics: dict[str, torch.Tensor], grad_norm: torch.Tensor, lr: float,
        batch_size: int, step: int, dynamics_step: int, *, phase_step: int, phase_end: int,
    ) -> None:
        """Record one update; ``phase_step`` of ``phase_end`` sets the log/checkpoint cadence."""
        optim, job = self.config.train, self.job
        update = step + dynamics_step
        metrics["train/grad_norm"] = grad_norm.detach()
        metrics["train/lr"] = grad_norm.new_tensor(lr)
        for name, value in metrics.items():
            self.window_sum[name] = self.window_sum.get(name, 0.0) + value.float()
        self.window_steps += 1
        phase_over = phase_step == phase_end
        checkpointing = phase_step % optim.checkpoint_every == 0 or phase_over
        # a row at every checkpoint too: a run resumed there starts an empty window, as this one
        if phase_step % optim.log_every == 0 or checkpointing:
            names = sorted(self.window_sum)
            means = distributed.mean_over_processes(
                job, torch.stack([self.window_sum[n] for n in names]) / self.window_steps
            )
            row = {n: v for n, v in zip(names, means.tolist(), strict=True)}
            elapsed = time.perf_counter() - self.window_start
            row["train/sequences_per_s"] = self.window_steps * batch_size / elapsed
            self.summary["train"] = row
            if self.log is not None:
                self.log.log(update, row)
            if self.progress is not None:
                self.progress.set_postfix(loss=f"{row['train/loss']:.3g}")
            self.window_sum, self.window_steps = {}, 0
            self.window_start = time.perf_counter()
        if self.progress is not None:
            self.progress.update(1)
        name = f"step_{step:07d}" + (f"_dynamics_{dynamics_step:07d}" if dynamics_step else "")
        if job.is_main and optim.image_every and phase_step % optim.image_every == 0:
            _write_strip(self.model, self.strip_windows, self.config, job.device,
                         self.out_dir / "predictions" / f"{name}.png")
        if checkpointing:
            if job.is_main:
                if self.fixed_val:
                    self.summary["eval"] = validate(self.model, self.fixed_val, self.config,
                                                    job.device)
                    if self.log is not None:
                        self.log.log(update, self.summary["eval"])
                _checkpoint(self.checkpoints, name, self.model, self.optimizer, step,
                            dynamics_step, self.resolved, self.summary,
                            optim.keep_checkpoints, self.noether, self.dataset)
            distributed.barrier(job)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            self.log.close()


def _describe_last(last: Path) -> str:
    return f"{last} (untouched)" if last.exists() else "none (no checkpoint was written yet)"


def _write_strip(
    model: SVGWorldModel, windows: list[dict[str, torch.Tensor]], config: TrainCommandConfig,
    device: torch.device, path: Path,
) -> None:
    if not windows:
        return
    batch = collate(windows)
    frames = batch["frames"].to(device)
    n_past = config.data.n_past
    model.eval()
    with torch.no_grad():
        predicted = model.predict(frames[:, :n_past], batch["actions"].to(device),
                                  config.data.n_future)
    model.train()
    save_strip(path, frames, predicted, n_past)


def _checkpoint(
    directory: Path, name: str, model: SVGWorldModel, optimizer: torch.optim.Optimizer,
    step: int, dynamics_step: int, resolved: dict[str, Any], summary: dict[str, Any], keep: int,
    noether: NoetherModule | None = None, dataset: str | None = None,
) -> None:
    """Write ``NAME.pt`` then ``last.pt`` (both atomic); prune old numbered ones.

    ``step`` is the joint step (where the lr and sampling schedules stand) and
    ``extra["dynamics_step"]`` the dynamics steps done; numbered names sort in training order.
    ``extra["dataset"]`` is the training split's fingerprint, checked on resume.
    """
    rng = rng_state()
    extra: dict[str, Any] = {
        "metrics": {k: v for k, v in summary.items() if isinstance(v, dict)},
        "dynamics_step": dynamics_step,
        "dataset": dataset,
    }
    if noether is not None:
        extra["noether"] = noether.checkpoint_state()
    for file in (f"{name}.pt", "last.pt"):
        save_checkpoint(directory / file, model=model, optimizer=optimizer, step=step,
                        config=resolved, rng=rng, extra=extra)
    numbered = sorted(directory.glob("step_*.pt"))
    for old in numbered[:-keep]:
        old.unlink()


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control train``: train, write ``results.json``, print where."""
    config = to_dataclass(TrainCommandConfig, cfg)
    out_dir = run_dir()
    results = train_world_model(config, out_dir)
    if os.environ.get("RANK", "0") == "0":
        loss = results["train"].get("train/loss")
        val = results["eval"].get("eval/mse")
        print(
            f"trained {results['steps']} steps: "
            f"loss {'n/a' if loss is None else f'{loss:.4g}'}, "
            f"val closed-loop mse {'n/a' if val is None else f'{val:.4g}'}\n"
            f"checkpoint: {results['checkpoint']}\nresults: {out_dir / 'results.json'}"
        )
