"""Cost of Noether tailoring relative to the plain SVG world model, measured in one run.

Prints two ratios (the project's targets in brackets):

* a second-order meta-training step (tailor K=1, tailored training unroll, backward through the
  inner step, Adam) ÷ a baseline training step on the same batch  [≤ 3×];
* one test-time tailoring step (closed-loop rollout + backward to the tailored parameters,
  measured as the increment from K=0 to K=k divided by k) ÷ a plain closed-loop rollout of the
  same batch  [≤ 2×].

Usage: ``python benchmarks/bench_noether.py [--model dcgan64|vgg|svg_lp] [--batch 16]
[--n-future 10] [--device auto] [--tailored lstm] [--embedding hidden] [--threads 1]
[--first-order | --model-first-order]``
(``--model``: a model config of ``conf/model``; default: the default model). Timings are medians
of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

import noether_control
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.tailoring import TailoringConfig
from noether_control.runtime import resolve_device


def timed(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``function()`` in seconds after one warm-up call."""
    function()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model config of conf/model, e.g. vgg")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-past", type=int, default=2)
    parser.add_argument("--n-future", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--tailored", default="lstm", choices=["lstm", "norm", "all"])
    parser.add_argument("--embedding", default="hidden", choices=["hidden", "frames"])
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--model-first-order", action="store_true",
                        help="noether.model_second_order=false: second order for g_φ only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)

    architecture = {}
    if args.model is not None:
        conf = Path(noether_control.__file__).parent / "conf" / "model" / f"{args.model}.yaml"
        if not conf.is_file():
            parser.error(f"--model: expected a config of {conf.parent}, got {args.model!r}")
        architecture = yaml.safe_load(conf.read_text())
    model = SVGWorldModel(SVGConfig(image_size=args.image_size, **architecture)).to(device)
    noether = NoetherModule(
        NoetherConfig(enabled=True, embedding=EmbeddingConfig(input=args.embedding),
                      tailored=args.tailored, model_second_order=not args.model_first_order,
                      inner=TailoringConfig(steps=1, lr=0.1, second_order=not args.first_order,
                                            learnable_lr=True)),
        model.config,
    ).to(device)
    optimizer = torch.optim.Adam(
        [{"params": list(model.parameters())}, {"params": list(noether.parameters())}], lr=1e-4
    )
    length = args.n_past + args.n_future
    frames = torch.rand(args.batch, length, 3, args.image_size, args.image_size, device=device)
    actions = torch.rand(args.batch, length, 1, device=device) * 4 - 2
    # Closed loop after the context: the regime scheduled sampling ends in, as at test time.
    teacher = torch.zeros(args.batch, length, dtype=torch.bool, device=device)
    teacher = None if args.tailored == "all" else teacher

    def baseline_step() -> None:
        out = model(frames, actions, args.n_past, teacher=teacher)
        loss = ((out.frames - frames[:, 1:]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def noether_step() -> None:
        out, _ = noether.train_forward(model, frames, actions, args.n_past, teacher=teacher)
        loss = ((out.frames - frames[:, 1:]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    context = frames[:, : args.n_past]

    @torch.no_grad()
    def plain_rollout() -> None:
        model.predict(context, actions, args.n_future)

    def tailored(steps: int) -> Callable[[], None]:
        @torch.no_grad()
        def predict() -> None:
            noether.predict(model, context, actions, args.n_future, steps=steps)

        return predict

    base = timed(baseline_step, device, args.repeats)
    meta = timed(noether_step, device, args.repeats)
    rollout = timed(plain_rollout, device, args.repeats)
    k = 5
    zero = timed(tailored(0), device, args.repeats)
    many = timed(tailored(k), device, args.repeats)
    per_step = (many - zero) / k
    order = ("first" if args.first_order
             else "g-second" if args.model_first_order else "second")
    print(f"model {args.model or 'default'}, device {device}, threads {args.threads}, "
          f"batch {args.batch}, window "
          f"{args.n_past}+{args.n_future}, {args.image_size}px, tailored={args.tailored}, "
          f"embedding={args.embedding}")
    print(f"baseline training step        {1e3 * base:9.1f} ms")
    print(f"{order}-order meta step         {1e3 * meta:9.1f} ms   ratio {meta / base:5.2f}x "
          "(target <= 3x)")
    print(f"plain closed-loop rollout     {1e3 * rollout:9.1f} ms")
    print(f"tailored predict, K=0         {1e3 * zero:9.1f} ms")
    print(f"one test-time inner step      {1e3 * per_step:9.1f} ms   ratio "
          f"{per_step / rollout:5.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
