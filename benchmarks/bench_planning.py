"""Planning cost per action through the SVG world model, against the true simulator.

    python benchmarks/bench_planning.py [--quick] [--checkpoint PATH] [--device auto]
        [--threads 1] [--repeats R] [--episodes N] [--no-diagnostics] [--skip 1,2,3]

Three tables, every number measured in this run (absolute times depend on the machine and on
what else runs on it, so each is also given against a reference measured alongside it):

1. **Cost per action, one CPU thread, one episode.** For each planner (CEM 500×15×5, the
   reference configuration; MPPI 500×15×1; MPPI 200×15×1, the ``mppi_cpu`` preset;
   iCEM, gradient and random shooting at their defaults) the median wall time of a full
   ``MPCAgent.act`` on one 64×64 frame once the agent has its context frames: the frame pushed,
   the context encoded (``MPCAgent`` encodes it again at every objective call, so once per
   planner iteration) and the planner run through the world model. Beside it the same planner
   in ``OracleAgent.act``, through the true simulator (``true_dynamics_objective``: float64
   NumPy physics, no network), and the ratio model / simulator. A plan under 50 ms keeps up
   with the env's 20 Hz (``dt = 0.05 s``) in real time. The gradient planner needs a
   differentiable objective, so it has no simulator column.
2. **Batched episodes.** ``mppi_cpu`` through the model deciding E = 1, 16, 64 parallel
   episodes in one ``act`` (one ``plan`` call, every candidate of every episode in one
   batch): ms per action (a call's time over E) and actions per second, against E = 1, and
   the rollout's arithmetic rate (GFLOP/s of its matrix products), which shows whether one
   call is already compute-bound (then batching has nothing to amortise). With CUDA
   (``--device auto`` or ``cuda``) the same on the GPU for E = 1 and 64; without, the rows
   are skipped with a note.
3. **Cross-check against the ``pytorch-mppi`` package** (``pytorch_mppi.MPPI``, used only
   here) on the true pendulum (``Pendulum-v1`` physics: g = 10, m = l = 1, dt = 0.05,
   max speed 8, max torque 2, no damping; cost = −reward). Our MPPI in ``OracleAgent`` and the
   package's MPPI with the same samples, horizon and λ, and the same noise (ours 0.5
   half-ranges = 1 N·m, the package's covariance 1 N·m²), play the same seeded 200-step
   episodes (episode ``i`` starts from the env's reset with seed ``i``): mean ± s.e. of the
   returns, the mean paired difference to ours, and ms per action. The package plans one
   episode per ``command`` call in a Python loop over the horizon; ours is timed one episode
   at a time as well. Two diagnostic rows change one thing each in the package to match ours:
   no control-cost term ``λ Uᵀ Σ⁻¹ ε`` (ours leaves it out, as PDDM does), and the reward
   taken on the state *before* each step as ours and the env do (the package's
   ``running_cost`` sees the state after the step).

Nothing here asserts on a time; the run prints tables only.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

import noether_control
from noether_control.agents.mpc import MPCAgent, MPCConfig, OracleAgent
from noether_control.agents.planners import make_planner, planner_config
from noether_control.models import SVGConfig, SVGWorldModel
from noether_control.runtime import resolve_device
from noether_control.training.config import DataConfig

ENV_ID = "NoetherControl/PixelPendulum-v0"
REAL_TIME_MS = 50.0
"""One control step of the env (``dt = 0.05 s``, 20 Hz) in milliseconds."""
MPPI_CPU = Path(noether_control.__file__).parent / "conf" / "planner" / "mppi_cpu.yaml"

# Pendulum-v1 physics for the pytorch-mppi cross-check (envs/dynamics.py with its defaults)
GRAVITY, MASS, LENGTH, DT, MAX_SPEED, MAX_TORQUE = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0


def mppi_cpu_config() -> dict[str, Any]:
    """The ``mppi_cpu`` planner preset (``conf/planner/mppi_cpu.yaml``) as a dict."""
    return dict(OmegaConf.to_container(OmegaConf.load(MPPI_CPU)))  # type: ignore[arg-type]


def planner_rows() -> list[tuple[str, dict[str, Any]]]:
    """``(label, planner config)`` of the planners of table 1."""
    return [
        ("CEM 500×15×5 (reference)", {"kind": "cem", "samples": 500, "horizon": 15,
                                      "iterations": 5}),
        ("MPPI 500×15×1", {"kind": "mppi", "samples": 500, "horizon": 15, "iterations": 1}),
        ("MPPI 200×15×1 (mppi_cpu)", mppi_cpu_config()),
        ("iCEM default", {"kind": "icem"}),
        ("gradient default", {"kind": "gradient"}),
        ("random shooting default", {"kind": "random"}),
    ]


def describe(cfg: dict[str, Any]) -> str:
    """``samples×horizon×iterations`` of a planner config, defaults filled in."""
    config = planner_config(cfg)
    return f"{config.samples}×{config.horizon}×{getattr(config, 'iterations', 1)}"


def interleaved(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Median seconds of each of ``fns`` over ``repeats`` rounds, after one warm-up call each.

    Every round calls each function once in turn, so that load changes on a shared machine hit
    all of them alike (as in ``bench_envs.py``) and ratios between them stay meaningful.
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) for spent in times]


def make_env(num_envs: int) -> Any:
    """The native pixel pendulum vector env with ``num_envs`` sub-environments."""
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")


@dataclass
class WorldModel:
    """The model planned through, its context length ``P`` and where it came from."""

    model: SVGWorldModel
    context_frames: int
    source: str


def load_model(checkpoint: str | None, device: torch.device) -> WorldModel:
    """A trained checkpoint's model, or the default architecture with random weights.

    A random-weight model costs exactly what a trained one of the same architecture costs:
    planning never branches on the weights.
    """
    if checkpoint is not None:
        from noether_control.agents.plan import load_planning_checkpoint

        loaded = load_planning_checkpoint(checkpoint, device)
        return WorldModel(loaded.model, loaded.context_frames, f"checkpoint {loaded.path}")
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig()).to(device).eval()
    return WorldModel(model, DataConfig().n_past, "default SVGConfig(), random weights")


def model_act(world: WorldModel, cfg: dict[str, Any], num_envs: int) -> Callable[[], object]:
    """``MPCAgent.act`` through the model on ``num_envs`` frames, ready to plan at every call.

    The agent has seen ``P - 1`` frames already (warm-up actions, no planning), so every call
    pushes a frame, encodes the context and plans.
    """
    env = make_env(num_envs)
    observation, _ = env.reset(seed=0)
    box = env.single_action_space
    planner = make_planner(cfg, box.low, box.high)
    agent = MPCAgent(world.model, planner, box, num_envs, world.context_frames, MPCConfig())
    rng = np.random.default_rng(0)
    for _ in range(world.context_frames - 1):
        agent.act(observation, rng)
    return lambda: agent.act(observation, rng)


def oracle_act(cfg: dict[str, Any], num_envs: int) -> Callable[[], object]:
    """``OracleAgent.act``: the same planner through the true simulator from the env's state."""
    env = make_env(num_envs)
    env.reset(seed=0)
    box = env.single_action_space
    agent = OracleAgent(env, make_planner(cfg, box.low, box.high))
    rng = np.random.default_rng(0)
    return lambda: agent.act(None, rng)


def encode_ms(world: WorldModel, repeats: int) -> float:
    """Milliseconds of one ``encode_context`` of one episode's ``P`` frames."""
    model, P = world.model, world.context_frames
    device = next(model.parameters()).device
    size, channels = model.config.image_size, model.config.channels
    frames = torch.randint(0, 256, (1, P, size, size, channels), dtype=torch.uint8, device=device)
    actions = torch.zeros(1, P - 1, model.config.action_dim, device=device)
    with torch.no_grad():
        return 1000 * interleaved([lambda: model.encode_context(frames, actions)], repeats,
                                  device)[0]


def flag(ms: float) -> str:
    """``yes`` when a plan of ``ms`` keeps up with the env's 20 Hz."""
    return "yes" if ms < REAL_TIME_MS else "no"


def planner_table(world: WorldModel, repeats: int) -> None:
    """Table 1: ms per action through the model and the simulator, E = 1, CPU."""
    encode = encode_ms(world, repeats)
    planners = planner_rows()
    calls: list[Callable[[], object]] = []
    for _, cfg in planners:
        calls.append(model_act(world, cfg, 1))
        # the gradient planner needs a differentiable objective: no simulator column
        if cfg["kind"] != "gradient":
            calls.append(oracle_act(cfg, 1))
    seconds = iter(interleaved(calls, repeats, torch.device("cpu")))
    rows = []
    for label, cfg in planners:
        model_ms = 1000 * next(seconds)
        sim_ms = 1000 * next(seconds) if cfg["kind"] != "gradient" else None
        iterations = getattr(planner_config(cfg), "iterations", 1)
        rows.append((label, describe(cfg), iterations, model_ms, sim_ms))

    print(f"1. Planning cost per action: one episode (E=1), {torch.get_num_threads()} CPU "
          f"thread(s), median of {repeats} interleaved rounds after a warm-up")
    header = (f"{'planner':<26} {'N×H×iters':>10} {'model ms':>9} {'encode':>7} {'< 50 ms':>8} "
              f"{'sim ms':>8} {'< 50 ms':>8} {'model/sim':>10}")
    print(header)
    print("-" * len(header))
    for label, size, iterations, model_ms, sim_ms in rows:
        share = f"{min(1.0, iterations * encode / model_ms):.0%}"
        sim = (f"{'n/a':>8} {'':>8} {'n/a':>10}" if sim_ms is None
               else f"{sim_ms:>8.1f} {flag(sim_ms):>8} {model_ms / sim_ms:>9.1f}x")
        print(f"{label:<26} {size:>10} {model_ms:>9.1f} {share:>7} {flag(model_ms):>8} {sim}")
    print(f"model ms: full MPCAgent.act on a (1, 64, 64, 3) uint8 frame; encode: share of it spent "
          f"encoding the {world.context_frames} context frames ({encode:.2f} ms per encoding, "
          "once per objective call); sim ms: OracleAgent.act with the same planner through the "
          "true simulator (the gradient planner needs a differentiable objective); < 50 ms: real "
          "time at the env's 20 Hz.")


def rollout_flops(model: SVGWorldModel) -> int:
    """About the FLOPs of one candidate's rollout step: two per weight outside the frame codec.

    Every parameter but the encoder's and decoder's (the LSTM stack, action embedding, code and
    reward heads) takes part in one multiply-add per row and step; element-wise work is left out.
    """
    codec = {id(p) for module in (model.encoder, model.decoder) for p in module.parameters()}
    return 2 * sum(p.numel() for p in model.parameters() if id(p) not in codec)


def batched_table(world: WorldModel, repeats: int, device: torch.device, gpu_note: str) -> None:
    """Table 2: ``mppi_cpu`` through the model for E parallel episodes in one call."""
    cfg = mppi_cpu_config()
    config = planner_config(cfg)
    cpu = torch.device("cpu")
    sizes = (1, 16, 64)
    measured = interleaved([model_act(world, cfg, num_envs) for num_envs in sizes], repeats, cpu)
    name = f"cpu, {torch.get_num_threads()} thread(s)"
    rows = [(name, num_envs, seconds) for num_envs, seconds in zip(sizes, measured, strict=True)]
    if device.type == "cuda":
        gpu_world = WorldModel(copy.deepcopy(world.model).to(device), world.context_frames,
                               world.source)
        sizes = (1, 64)
        measured = interleaved([model_act(gpu_world, cfg, num_envs) for num_envs in sizes],
                               repeats, device)
        name = torch.cuda.get_device_name(device)
        rows += [(name, num_envs, seconds) for num_envs, seconds in zip(sizes, measured,
                                                                        strict=True)]
    flops_per_row = rollout_flops(world.model) * config.horizon * config.iterations

    print(f"2. Batched episodes: MPPI {describe(cfg)} (mppi_cpu) through the model, one act "
          f"(one plan call) decides all E actions; median of {repeats} interleaved rounds")
    print(f"   CUDA: {gpu_note}")
    header = (f"{'device':<28} {'E':>3} {'rows':>6} {'ms/call':>9} {'ms/action':>10} "
              f"{'actions/s':>10} {'× E=1':>7} {'GFLOP/s':>8}")
    print(header)
    print("-" * len(header))
    reference: dict[str, float] = {}
    for name, num_envs, seconds in rows:
        per_second = num_envs / seconds
        reference.setdefault(name, per_second)
        candidates = num_envs * config.samples
        gflops = candidates * flops_per_row / seconds / 1e9
        print(f"{name:<28} {num_envs:>3} {candidates:>6} {1000 * seconds:>9.1f} "
              f"{1000 * seconds / num_envs:>10.2f} {per_second:>10.1f} "
              f"{per_second / reference[name]:>6.1f}x {gflops:>8.1f}")
    print("rows: candidates rolled out in one batch (E × samples); × E=1: actions/s over those of "
          "E=1 on the same device (what batching amortises); GFLOP/s: the rollout's multiply-"
          f"adds ({rollout_flops(world.model) / 1e6:.2f} MFLOP per candidate and step, "
          "element-wise work left out) over the whole call.")


# ---------------------------------------------------------------- pytorch-mppi cross-check


def angle_normalize(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles to ``[-π, π)`` as ``Pendulum-v1`` does."""
    return ((angle + math.pi) % (2 * math.pi)) - math.pi


def pendulum_dynamics(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``envs.dynamics.pendulum_step`` in torch with ``Pendulum-v1``'s physics, ``(K, 2)``."""
    theta, theta_dot = state[:, 0], state[:, 1]
    u = action[:, 0].clamp(-MAX_TORQUE, MAX_TORQUE)
    acceleration = 3 * GRAVITY / (2 * LENGTH) * torch.sin(theta) + 3.0 / (MASS * LENGTH**2) * u
    theta_dot = (theta_dot + acceleration * DT).clamp(-MAX_SPEED, MAX_SPEED)
    return torch.stack((theta + theta_dot * DT, theta_dot), dim=1)


def pendulum_cost(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Minus ``envs.dynamics.pendulum_reward`` of ``action`` in ``state``, ``(K,)``."""
    u = action[:, 0].clamp(-MAX_TORQUE, MAX_TORQUE)
    return angle_normalize(state[:, 0]) ** 2 + 0.1 * state[:, 1] ** 2 + 0.001 * u**2


def reward_before_step() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Dynamics and cost for the package that charge the state *before* each step.

    The package calls ``running_cost(next_state, action)``; here the state carries a third
    column, the cost of the step just taken from the state before it, which the cost returns.
    """

    def dynamics(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        cost = pendulum_cost(state[:, :2], action)
        return torch.cat((pendulum_dynamics(state[:, :2], action), cost[:, None]), dim=1)

    def cost(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return state[:, 2]

    return dynamics, cost


def check_torch_dynamics(env: Any) -> tuple[float, float]:
    """Largest differences of the torch step and cost from the env's own, on random inputs."""
    system = env.unwrapped.system
    rng = np.random.default_rng(0)
    states = rng.uniform([-2 * np.pi, -MAX_SPEED], [2 * np.pi, MAX_SPEED], (4096, 2))
    torques = rng.uniform(-1.5 * MAX_TORQUE, 1.5 * MAX_TORQUE, (4096, 1))
    params = np.tile([GRAVITY, MASS, LENGTH, 0.0], (4096, 1))
    state_t, torque_t = torch.as_tensor(states), torch.as_tensor(torques)
    step = pendulum_dynamics(state_t, torque_t).numpy() - system.step(states, torques, params)
    cost = np.abs(-pendulum_cost(state_t, torque_t).numpy() - system.reward(states, torques))
    return float(np.abs(step).max()), float(cost.max())


@dataclass
class EpisodeStats:
    """Returns of seeded episodes and the wall time of every action decision."""

    name: str
    returns: np.ndarray
    act_seconds: float
    actions: int

    @property
    def ms_per_action(self) -> float:
        """Mean milliseconds per decided action."""
        return 1000 * self.act_seconds / self.actions


def run_ours(seeds: list[int], steps: int, samples: int, horizon: int, lam: float) -> EpisodeStats:
    """Our MPPI in ``OracleAgent``, one episode at a time (E = 1), seeded like the package's."""
    cfg = {"kind": "mppi", "samples": samples, "horizon": horizon, "iterations": 1,
           "noise_std": 0.5, "temperature": lam}
    env = make_env(1)
    box = env.single_action_space
    agent = OracleAgent(env, make_planner(cfg, box.low, box.high))
    returns, elapsed = [], 0.0
    for seed in seeds:
        env.reset(seed=seed)
        agent.reset(np.ones(1, dtype=np.bool_))
        rng = np.random.default_rng(seed)
        total = 0.0
        for _ in range(steps):
            start = time.perf_counter()
            action = agent.act(None, rng)
            elapsed += time.perf_counter() - start
            _, reward, _, _, _ = env.step(action)
            total += float(reward[0])
        returns.append(total)
    return EpisodeStats("ours: OracleAgent + MPPI", np.array(returns), elapsed,
                        steps * len(seeds))


def run_package(name: str, seeds: list[int], steps: int, samples: int, horizon: int,
                lam: float, sigma2: float, *, control_cost: bool = True,
                cost_before_step: bool = False) -> EpisodeStats:
    """``pytorch_mppi.MPPI`` on the true dynamics, one controller and episode at a time.

    ``U_init`` and ``u_init`` are zero (the centre of the box), as our warm start; the package
    would otherwise start from a noise sample. ``control_cost=False`` drops the package's
    ``λ Uᵀ Σ⁻¹ ε`` term; ``cost_before_step`` charges each step's cost on the state before it.
    """
    from pytorch_mppi import MPPI

    dtype = torch.float64
    dynamics, cost = (reward_before_step() if cost_before_step
                      else (pendulum_dynamics, pendulum_cost))
    env = make_env(1)
    returns, elapsed = [], 0.0
    for seed in seeds:
        env.reset(seed=seed)
        torch.manual_seed(seed)
        controller = MPPI(
            dynamics, cost, nx=3 if cost_before_step else 2,
            noise_sigma=torch.tensor([[sigma2]], dtype=dtype), num_samples=samples,
            horizon=horizon, lambda_=lam,
            u_min=torch.tensor([-MAX_TORQUE], dtype=dtype),
            u_max=torch.tensor([MAX_TORQUE], dtype=dtype),
            u_init=torch.zeros(1, dtype=dtype), U_init=torch.zeros(horizon, 1, dtype=dtype),
        )
        if not control_cost:
            # 0.9.1 has no switch for the term: replace the hook that computes λ Σ⁻¹ ε
            controller._compute_action_cost = torch.zeros_like
        total = 0.0
        for _ in range(steps):
            state = torch.as_tensor(env.unwrapped.states[0], dtype=dtype)
            if cost_before_step:
                state = torch.cat((state, state.new_zeros(1)))
            start = time.perf_counter()
            with torch.no_grad():
                action = controller.command(state)
            elapsed += time.perf_counter() - start
            _, reward, _, _, _ = env.step(action.numpy().reshape(1, 1).astype(np.float32))
            total += float(reward[0])
        returns.append(total)
    return EpisodeStats(name, np.array(returns), elapsed, steps * len(seeds))


def mean_se(values: np.ndarray) -> str:
    """``mean ± standard error`` (no error for a single value)."""
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1) / math.sqrt(len(values)):.1f}"


def cross_check_table(episodes: int, steps: int, samples: int, horizon: int, lam: float,
                      diagnostics: bool) -> None:
    """Table 3: our MPPI against ``pytorch_mppi.MPPI`` on the same seeded episodes."""
    seeds = list(range(episodes))
    sigma2 = (0.5 * MAX_TORQUE) ** 2  # 0.5 half-ranges of [-2, 2] N·m = 1 N·m
    step_error, cost_error = check_torch_dynamics(make_env(1))
    args = (seeds, steps, samples, horizon, lam, sigma2)
    results = [run_ours(seeds, steps, samples, horizon, lam),
               run_package(f"pytorch-mppi {version('pytorch_mppi')}", *args)]
    if diagnostics:
        results.append(run_package("  without control cost", *args, control_cost=False))
        results.append(run_package("  w/o control cost, cost before step", *args,
                                   control_cost=False, cost_before_step=True))
    ours = results[0]

    print(f"3. Cross-check against pytorch-mppi on the true pendulum: {episodes} episodes × "
          f"{steps} steps (seeds 0..{episodes - 1}), {samples} samples, horizon {horizon}, "
          f"λ = {lam}, noise σ = {math.sqrt(sigma2):.1f} N·m, E = 1, {torch.get_num_threads()} "
          "thread(s)")
    print(f"   torch dynamics vs envs.dynamics: max |Δstate| = {step_error:.1e}, "
          f"max |Δreward| = {cost_error:.1e}")
    header = (f"{'controller':<38} {'return (mean ± s.e.)':>21} {'Δ vs ours (paired)':>19} "
              f"{'ms/action':>10}")
    print(header)
    print("-" * len(header))
    for result in results:
        paired = "" if result is ours else mean_se(result.returns - ours.returns)
        print(f"{result.name:<38} {mean_se(result.returns):>21} {paired:>19} "
              f"{result.ms_per_action:>10.2f}")
    print("ours: float32 plans through the float64 NumPy simulator; pytorch-mppi: float64 torch "
          "dynamics, one command() per episode per step, U_init = u_init = 0. Δ: the mean "
          "± s.e. of the per-episode differences to ours.")
    if diagnostics:
        print("The last row optimises exactly our objective (only the noise draws differ); the "
              "package's defaults add λ Uᵀ Σ⁻¹ ε (the sample-dependent part of a torque cost "
              f"λ u²/(2σ²) = {lam / (2 * sigma2):g} u² per step; the reward's is 0.001 u²) and "
              "score the states s_1..s_H after each step instead of s_0..s_(H-1) before.")


def pick_device(spec: str) -> tuple[torch.device, str]:
    """The device of table 2's extra rows and a line saying whether they run.

    Asking for CUDA where there is none skips those rows (with a note) instead of failing.
    """
    available = torch.cuda.is_available()
    if spec.startswith("cuda") and not available:
        return torch.device("cpu"), f"not available (--device {spec}): GPU rows skipped"
    device = resolve_device(spec)
    if device.type == "cuda":
        return device, f"available: GPU rows on {device}"
    if available:
        return device, "available, but --device cpu: GPU rows skipped"
    return device, "not available: GPU rows skipped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and 2 cross-check episodes (under a minute)")
    parser.add_argument("--checkpoint", default=None,
                        help="plan through this trained checkpoint (file or run directory) "
                             "instead of a random-weight default model")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N: adds the GPU rows of table 2 when "
                             "CUDA; tables 1 and 3 always run on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (median); default 7, 3 with --quick")
    parser.add_argument("--episodes", type=int, default=None,
                        help="cross-check episodes; default 10, 2 with --quick")
    parser.add_argument("--steps", type=int, default=200, help="steps per cross-check episode")
    parser.add_argument("--samples", type=int, default=200, help="cross-check MPPI samples")
    parser.add_argument("--horizon", type=int, default=15, help="cross-check MPPI horizon")
    parser.add_argument("--lam", type=float, default=1.0, help="cross-check MPPI temperature")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the cross-check's two diagnostic package rows")
    parser.add_argument("--skip", default="",
                        help="comma-separated tables to skip: 1, 2, 3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    episodes = args.episodes if args.episodes is not None else (2 if args.quick else 10)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    device, gpu_note = pick_device(args.device)
    start = time.perf_counter()

    world = load_model(args.checkpoint, torch.device("cpu"))
    parameters = sum(p.numel() for p in world.model.parameters())
    print(f"Planning benchmark: torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"thread(s), model: {world.source} ({parameters / 1e6:.2f}M parameters, "
          f"P = {world.context_frames} context frames)")
    if "1" not in skip:
        print()
        planner_table(world, repeats)
    if "2" not in skip:
        print()
        batched_table(world, max(2, repeats // 2) if args.quick else repeats, device, gpu_note)
    if "3" not in skip:
        print()
        cross_check_table(episodes, args.steps, args.samples, args.horizon, args.lam,
                          not args.no_diagnostics)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
