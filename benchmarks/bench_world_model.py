"""SVG world-model throughput at the default config: training sequences/s, prediction frames/s.

    python benchmarks/bench_world_model.py [--threads 1] [--device auto] [--repeats 5]

Absolute numbers depend on the machine (and on what else runs on it), so each is also given as
a ratio to a reference measured in the same run: the model's own encoder + decoder
auto-encoding frames (forward only for prediction, forward + backward for training), i.e. how
much the recurrent closed loop costs over the per-frame convolutions it cannot avoid. The
dynamics phase (``train.dynamics_steps``) skips those convolutions: its row compares its windows
of ``n_past + dynamics_horizon`` codes per second with auto-encoding as many frames.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from noether_control.models import SVGConfig, SVGWorldModel
from noether_control.runtime import resolve_device
from noether_control.training.config import DataConfig, OptimConfig
from noether_control.training.dynamics import dynamics_losses, predictor_parameters


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--predict-batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    config, data, optim = SVGConfig(), DataConfig(path="-"), OptimConfig()
    model = SVGWorldModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr)
    batch, window = optim.batch_size, data.window
    frames = torch.rand(batch, window, config.channels, config.image_size, config.image_size,
                        device=device)
    actions = torch.randn(batch, window, config.action_dim, device=device)

    def train_step(teacher: torch.Tensor | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(frames, actions, data.n_past, teacher=teacher)
        ((out.frames - frames[:, 1:]) ** 2).mean().backward()
        optimizer.step()

    def autoencode_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        code, skips = model.encode(frames.flatten(0, 1))
        ((model.decode(code, skips) - frames.flatten(0, 1)) ** 2).mean().backward()
        optimizer.step()

    closed = torch.zeros(batch, window, dtype=torch.bool, device=device)
    reference_train = batch * window / timed(autoencode_step, args.repeats, device)
    rows = [
        ("train, teacher forcing", "sequences/s",
         batch / timed(lambda: train_step(None), args.repeats, device), reference_train / window),
        ("train, closed loop", "sequences/s",
         batch / timed(lambda: train_step(closed), args.repeats, device),
         reference_train / window),
    ]
    dynamics_length = data.n_past + optim.dynamics_horizon
    dynamics_batch = optim.dynamics_batch_size
    codes = torch.rand(dynamics_batch, dynamics_length, config.g_dim, device=device)
    code_window = {"codes": codes * 2 - 1,
                   "actions": torch.randn(dynamics_batch, dynamics_length, config.action_dim,
                                          device=device),
                   "rewards": torch.randn(dynamics_batch, dynamics_length, device=device),
                   "states": torch.zeros(dynamics_batch, dynamics_length, 0, device=device)}
    dynamics_optimizer = torch.optim.Adam(predictor_parameters(model), lr=optim.dynamics_lr)

    def dynamics_step() -> None:
        dynamics_optimizer.zero_grad(set_to_none=True)
        loss, _ = dynamics_losses(model, code_window, data.n_past, optim.reward_weight,
                                  optim.state_weight)
        loss.backward()
        dynamics_optimizer.step()

    rows.append((f"train, dynamics phase, {dynamics_length} codes", "sequences/s",
                 dynamics_batch / timed(dynamics_step, args.repeats, device),
                 reference_train / dynamics_length))
    horizon, predict_batch = 25, args.predict_batch
    context = torch.rand(predict_batch, data.n_past, config.channels, config.image_size,
                         config.image_size, device=device)
    plan = torch.randn(predict_batch, data.n_past + horizon - 1, config.action_dim, device=device)
    flat = torch.rand(predict_batch * horizon, config.channels, config.image_size,
                      config.image_size, device=device)
    with torch.no_grad():
        reference_predict = flat.shape[0] / timed(lambda: model.decode(*model.encode(flat)),
                                                  args.repeats, device)
        rows.append((f"predict, batch {predict_batch}, H={horizon}", "frames/s",
                     predict_batch * horizon / timed(
                         lambda: model.predict(context, plan, horizon), args.repeats, device),
                     reference_predict))
        rows.append((f"predict, batch 1, H={horizon}", "frames/s",
                     horizon / timed(lambda: model.predict(context[:1], plan[:1], horizon),
                                     args.repeats, device),
                     reference_predict))

    parameters = sum(p.numel() for p in model.parameters())
    print(f"SVG world model, default config ({parameters / 1e6:.2f}M parameters), "
          f"device {device}, {args.threads} thread(s), batch {batch}, window {window}")
    print(f"  model: {asdict(config)}")
    print(f"{'measurement':<34} {'throughput':>12} {'unit':<12} {'vs autoencoder':>15}")
    for name, unit, value, reference in rows:
        print(f"{name:<34} {value:>12.1f} {unit:<12} {value / reference:>14.2f}x")
    print("reference: encoder+decoder on the same frames, measured in this run "
          f"({reference_train:.1f} frames/s training, {reference_predict:.1f} frames/s forward)")


if __name__ == "__main__":
    main()
