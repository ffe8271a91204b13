"""``noether-control mbrl``: the model-based loop, from a few random episodes to an agent.

    noether-control mbrl iterations=2 hydra.run.dir=runs/mbrl
    noether-control mbrl experiment=smoke

The agent (``agent``) is ``mpc`` (plans through the latest model) or ``sac`` (a SAC policy
trained inside the latest model by ``noether-control rl``, acting on its latent state).
Iteration 0 collects ``initial_episodes`` with the OU policy, trains the world model on them
(``train_overrides``: the ``train`` command's own presets, e.g. ``experiment=demo``) and makes
and evaluates the agent. Each next iteration ``k``:

1. collects ``episodes`` more with the latest agent plus exploration noise (``policy=mpc``, or
   ``policy=sb3`` with the model as ``policy.checkpoint``), on top of the previous dataset
   (``dataset.base``: a new dataset version, nothing overwritten);
2. continues the world model from its checkpoint on the grown data (``train.init_from``:
   ``train_steps`` more joint steps with their own lr decay, then the dynamics phase);
3. with ``refit_reward``, refits the new model's reward head on its own rollouts
   (``noether-control refit_reward``, ``refit_overrides``); the agent of every later stage of
   the iteration (guide, evaluation, next collection) reads the refitted model, while the next
   iteration continues the trained one;
4. with ``guide_steps`` (``agent=mpc``), learns a SAC actor and critic from every real
   transition so far, on the new model's latent state (``noether-control rl experience=real``,
   LOOP's recipe), which then guide the MPC agent's evaluation and next collection;
5. makes the agent for the new model and evaluates it on seeded real episodes, episode ``i``
   seeded ``eval_seed + i`` in every iteration: ``noether-control plan`` for MPC;
   ``noether-control rl`` (``rl_overrides``), which trains SAC afresh in the new model and
   evaluates it, for SAC.

Every stage is a ``noether-control`` command run in its own directory under the run directory
(``iter{k}/collect``, ``iter{k}/train``, ``iter{k}/refit``, ``iter{k}/guide``, ``iter{k}/plan``
or ``iter{k}/rl``);
a stage whose ``results.json`` exists is done. A killed loop, run again with the same settings,
picks up where it stopped: a killed training (or SAC run) resumes from its last checkpoint, a
killed collection is redone with the same seed (its dataset is written atomically, so no
half-written episode survives). ``progress.csv`` and ``progress.png``: the mean return against
the real environment steps behind the model.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from noether_control.agents.harness import mean_return_text
from noether_control.agents.policies import require_correlation
from noether_control.runtime import (
    ReportedError,
    atomic_path,
    require_at_least,
    require_choice,
    run_dir,
    to_dataclass,
    write_json,
)

AGENTS = ("mpc", "sac")


@dataclass
class MBRLConfig:
    """Config of ``noether-control mbrl`` (``conf/commands/mbrl/mbrl.yaml``)."""

    env: str = "pendulum"
    """The env preset (``conf/env/``) of every stage."""
    iterations: int = 2
    """Iterations after the initial one (each collects, continues the model, evaluates)."""
    initial_episodes: int = 40
    """Episodes collected with the OU policy before the first model."""
    episodes: int = 30
    """Episodes collected with the latest agent in each iteration."""
    collect_num_envs: int = 15
    """Episodes collected in parallel."""
    agent: str = "mpc"
    """``mpc`` (planning through the latest model) or ``sac`` (trained in it), the agent that
    collects and is evaluated."""
    planner: str = "mppi_cpu"
    """``agent=mpc``: the planner preset (``conf/planner/``, and the agent preset of the same
    name) of the MPC agent."""
    exploration_std: float = 0.3
    """Gaussian action noise while collecting, in half-ranges of the action box."""
    exploration_correlation: float = 0.0
    """``agent=mpc``: that noise's correlation from one step to the next, in ``[0, 1)`` (0:
    white; 0.9: pushes that last about 10 steps, which carry a held pendulum off upright)."""
    train_steps: int = 700
    """Joint steps each world model trains (the first from scratch, the next ones continuing
    the previous), each with a linear lr decay over its own steps."""
    train_overrides: list[str] = field(default_factory=lambda: ["experiment=demo"])
    """``noether-control train`` overrides of every world model (its own presets)."""
    refit_reward: bool = False
    """Refit every model's reward head on its own rollouts (``noether-control refit_reward``)
    and make the agent of the refitted model; the next model continues the trained one."""
    refit_overrides: list[str] = field(default_factory=list)
    """``noether-control refit_reward`` overrides of every refit (its own presets)."""
    collect_overrides: list[str] = field(default_factory=list)
    """Extra ``noether-control collect`` overrides of every collection."""
    plan_overrides: list[str] = field(default_factory=list)
    """Extra ``noether-control plan`` overrides of every evaluation (``agent=mpc``)."""
    guide_steps: int = 0
    """``agent=mpc``: SAC gradient updates on the loop's real transitions after every model
    (``rl experience=real``); its actor and critic guide the MPC agent. 0: no guide."""
    guide_value_weight: float = 1.0
    """Weight of the guide's value at the end of each plan (0: its actor proposes only)."""
    rl_overrides: list[str] = field(default_factory=list)
    """``noether-control rl`` overrides of every SAC training, in the model (``agent=sac``) or
    on the real transitions (``guide_steps``): its own presets, steps, evaluation env."""
    eval_episodes: int = 20
    """Seeded real episodes of every evaluation."""
    eval_seed: int = 1000
    """Evaluation episode ``i`` is seeded ``eval_seed + i`` (never a collection seed)."""
    seed: int = 0
    """Collection ``k`` is seeded ``seed + k``; every training ``seed``."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        for name in ("initial_episodes", "episodes", "collect_num_envs", "train_steps",
                     "eval_episodes"):
            require_at_least(name, getattr(self, name), 1, integer=True)
        require_at_least("iterations", self.iterations, 0, integer=True)
        require_at_least("guide_steps", self.guide_steps, 0, integer=True)
        require_at_least("guide_value_weight", self.guide_value_weight, 0)
        if self.guide_steps and self.agent != "mpc":
            raise ValueError(f"guide_steps: a guide steers MPC, got {self.guide_steps} with "
                             f"agent={self.agent}")
        require_at_least("exploration_std", self.exploration_std, 0)
        require_correlation("exploration_correlation", self.exploration_correlation)
        if self.agent != "mpc" and self.exploration_correlation != 0:
            raise ValueError(f"exploration_correlation: correlated noise is for agent=mpc, got "
                             f"{self.exploration_correlation} with agent={self.agent}")
        require_choice("agent", self.agent, AGENTS)
        for name in ("train_overrides", "refit_overrides", "collect_overrides",
                     "plan_overrides", "rl_overrides"):
            for item in getattr(self, name):
                if "=" not in str(item) or str(item).startswith("hydra.run.dir"):
                    raise ValueError(f"{name}: expected key=value overrides (the run directory "
                                     f"is the loop's), got {item!r}")


class StageError(ReportedError):
    """A stage's command exited with an error; its output is in the stage's ``stage.log``."""


def run_stage(directory: Path, command: str, overrides: list[str]) -> dict[str, Any]:
    """``noether-control COMMAND overrides`` in ``directory``, unless its results exist.

    Returns the stage's ``results.json``. The command's output goes to ``directory/stage.log``.
    """
    results = directory / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "noether_control", command, *overrides,
            f"hydra.run.dir={directory}"]
    print(f"mbrl: {directory.parent.name}/{directory.name}: noether-control {command} "
          + " ".join(overrides), flush=True)
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(directory / "stage.log", "w") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=environment,
                              check=False)
    if done.returncode != 0 or not results.is_file():
        tail = (directory / "stage.log").read_text()[-2000:]
        raise StageError(f"mbrl: stage {directory} failed (exit {done.returncode}); the end of "
                          f"its log:\n{tail}\nfix the cause and run the same command again to "
                          "resume")
    return json.loads(results.read_text())


def collect_stage(config: MBRLConfig, out_dir: Path, iteration: int, base: str | None,
                  model: Path | None, agent: Path | None, guide: Path | None
                  ) -> dict[str, Any]:
    """Iteration 0: OU episodes; later: the agent of ``model`` with noise, on top of ``base``
    (MPC through ``model``, guided by ``guide``'s policy if given, or the SAC policy of the
    ``agent`` stage trained in it)."""
    overrides = [f"env={config.env}", f"seed={config.seed + iteration}", "progress=false",
                 f"num_envs={config.collect_num_envs}",
                 f"dataset.root={out_dir / 'datasets'}",
                 f"dataset.id=noether-control/mbrl/iter{iteration}-v0"]
    if model is None:
        overrides += ["policy=ou", f"episodes={config.initial_episodes}"]
    else:
        if config.agent == "mpc":
            overrides += ["policy=mpc", f"planner@policy.planner={config.planner}",
                          f"policy.exploration_correlation={config.exploration_correlation}"]
            if guide is not None:
                overrides += [f"policy.guide_path={guide / 'policy.zip'}",
                              f"policy.guide_value_weight={config.guide_value_weight}"]
        else:
            assert agent is not None  # the sac stage of the previous iteration
            overrides += ["policy=sb3", f"policy.path={agent / 'policy.zip'}", "policy.algo=sac"]
        overrides += [f"policy.checkpoint={model}",
                      f"policy.exploration_std={config.exploration_std}",
                      f"episodes={config.episodes}", f"dataset.base={base}"]
    return run_stage(out_dir / f"iter{iteration}" / "collect", "collect",
                     overrides + list(config.collect_overrides))


def train_stage(config: MBRLConfig, out_dir: Path, iteration: int, data: str,
                previous: Path | None) -> Path:
    """Train (iteration 0) or continue (``previous``) the world model on ``data``."""
    steps = config.train_steps * (iteration + 1)
    overrides = [*config.train_overrides, f"data.path={data}", f"train.steps={steps}",
                 f"train.lr_decay_steps={config.train_steps}", f"seed={config.seed}",
                 "train.progress=false"]
    if previous is not None:
        overrides.append(f"train.init_from={previous / 'checkpoints' / 'last.pt'}")
    directory = out_dir / f"iter{iteration}" / "train"
    run_stage(directory, "train", overrides)
    return directory


def refit_stage(config: MBRLConfig, out_dir: Path, iteration: int, trained: Path) -> Path:
    """``trained``'s reward head refitted on its own rollouts; the stage's run directory is the
    refitted model's checkpoint."""
    directory = out_dir / f"iter{iteration}" / "refit"
    run_stage(directory, "refit_reward", [f"checkpoint={trained}", f"seed={config.seed}",
                                          *config.refit_overrides])
    return directory


def evaluation_overrides(config: MBRLConfig, model: Path) -> list[str]:
    """The model and the seeded evaluation episodes every agent stage shares."""
    return [f"env={config.env}", f"checkpoint={model}", f"episodes={config.eval_episodes}",
            f"seed={config.eval_seed}"]


def guide_stage(config: MBRLConfig, out_dir: Path, iteration: int, model: Path
                ) -> tuple[Path, dict[str, Any]]:
    """SAC learned from every real transition of ``model``'s training data on its latent
    state, evaluated alone on the evaluation episodes (``rl experience=real``)."""
    directory = out_dir / f"iter{iteration}" / "guide"
    overrides = [*evaluation_overrides(config, model), "experience=real",
                 f"steps={config.guide_steps}", *config.rl_overrides]
    return directory, run_stage(directory, "rl", overrides)


def agent_stage(config: MBRLConfig, out_dir: Path, iteration: int, model: Path,
                guide: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The agent of ``model`` evaluated on the seeded evaluation episodes: MPC through it
    (``plan``; guided by ``guide``'s policy if given), or SAC trained in it (``rl``). Returns
    the stage directory and its results."""
    common = evaluation_overrides(config, model)
    if config.agent == "mpc":
        directory = out_dir / f"iter{iteration}" / "plan"
        overrides = [*common, f"agent={config.planner}", "progress=false"]
        if guide is not None:
            overrides += [f"agent.guide_path={guide / 'policy.zip'}",
                          f"agent.guide_value_weight={config.guide_value_weight}"]
        return directory, run_stage(directory, "plan", overrides + config.plan_overrides)
    directory = out_dir / f"iter{iteration}" / "rl"
    return directory, run_stage(directory, "rl", [*common, "algo=sac", *config.rl_overrides])


AGENT_LABELS = {"mpc": "MPC through the model", "sac": "SAC trained in the model"}


def write_progress(rows: list[dict[str, Any]], out_dir: Path, label: str) -> None:
    """``progress.csv`` and ``progress.png``: mean return (± s.e.) against real env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(out_dir / "progress.csv") as temporary, temporary.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    steps = np.array([row["real_env_steps"] for row in rows], dtype=float)
    mean = np.array([row["mean_return"] for row in rows], dtype=float)
    error = np.array([row["stderr_return"] or 0.0 for row in rows], dtype=float)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.errorbar(steps, mean, yerr=error, marker="o", capsize=3, label=label)
    axis.set(xlabel="real environment steps behind the model", ylabel="mean return",
             title="model-based loop")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(out_dir / "progress.png") as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def model_based_loop(config: MBRLConfig, out_dir: Path) -> dict[str, Any]:
    """Run (or resume) every iteration; write ``progress.csv/png`` and ``results.json``."""
    config.validate()
    rows: list[dict[str, Any]] = []
    data: str | None = None
    trained: Path | None = None
    model: Path | None = None
    agent: Path | None = None
    guide: Path | None = None
    for iteration in range(config.iterations + 1):
        collected = collect_stage(config, out_dir, iteration, data, model, agent, guide)
        data = str(collected["path"])
        trained = train_stage(config, out_dir, iteration, data, trained)
        model = refit_stage(config, out_dir, iteration, trained) if config.refit_reward else trained
        guide_return = None
        if config.guide_steps:
            guide, alone = guide_stage(config, out_dir, iteration, model)
            guide_return = alone["mean_return"]
        agent, evaluation = agent_stage(config, out_dir, iteration, model, guide)
        rows.append({"iteration": iteration, "real_env_steps": collected["total_steps"],
                     "episodes": collected.get("base_episodes", 0) + collected["episodes"],
                     "collection_return": collected["mean_return"],
                     "mean_return": evaluation["mean_return"],
                     "stderr_return": evaluation["stderr_return"],
                     "ms_per_action": evaluation["ms_per_action"],
                     "guide_return": guide_return,
                     "dataset": data, "model": str(model)})
        write_progress(rows, out_dir, AGENT_LABELS[config.agent])
    document = {"config": asdict(config), "iterations": rows,
                "final_mean_return": rows[-1]["mean_return"],
                "final_real_env_steps": rows[-1]["real_env_steps"]}
    write_json(out_dir / "results.json", document)
    return document


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control mbrl``."""
    config = to_dataclass(MBRLConfig, cfg)
    out_dir = run_dir()
    document = model_based_loop(config, out_dir)
    for row in document["iterations"]:
        print(f"iteration {row['iteration']}: {row['real_env_steps']} real steps, "
              f"{mean_return_text(row)}")
    print(f"results: {out_dir / 'results.json'}\nplot: {out_dir / 'progress.png'}")
