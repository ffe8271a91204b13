"""Planning through a Noether-tailored world model.

Before planning, each episode gets its own parameters: a few inner steps (the one inner loop,
:func:`noether_control.noether.tailoring.tailor`) make g_φ conserved along the model's prediction
from the episode's observed frames under a tentative plan (the warm start, or the mean of a
planner iteration's candidates). :class:`TailoredWorldModel` then holds those per-episode
parameters and satisfies :class:`noether_control.models.planning.PlanningModel`, so a planner
cannot tell it from the plain model.

Only ``tailored=lstm`` and ``tailored=norm`` checkpoints plan this way: their per-episode
parameters are a few ``(γ, β)`` vectors that every candidate row of an episode shares, whereas
``tailored=all`` would need a copy of every weight per episode inside the rollout.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noether_control.models.svg import Rollout, SVGWorldModel, WorldState, as_model_frames
from noether_control.noether.meta import NoetherModule
from noether_control.noether.tailoring import Params


class TailoredWorldModel:
    """A world model with per-episode tailored ``(γ, β)``; a ``PlanningModel``.

    Args:
        model: the world model.
        params: per-episode adaptation entries ``(E, size)`` (see
            :meth:`SVGWorldModel.adapt_shapes`), e.g. from :func:`tailor_to_plan`. A state of
            ``E · n`` rows (from :meth:`expand`) uses episode ``e``'s entries for rows
            ``e · n … e · n + n - 1``.
    """

    def __init__(self, model: SVGWorldModel, params: Params) -> None:
        if not params:
            raise ValueError("params: expected per-episode adaptation entries, got none")
        model.check_adapt(params, next(iter(params.values())).shape[0])
        self.model = model
        self.config = model.config
        self.params = params
        self.episodes = next(iter(params.values())).shape[0]

    def _adapt(self, rows: int) -> Params:
        """The entries for a batch of ``rows`` = ``episodes · n`` rows, episode-major."""
        if rows % self.episodes:
            raise ValueError(
                f"batch: expected a multiple of the {self.episodes} tailored episodes "
                f"(episode-major candidates), got {rows} rows"
            )
        repeats = rows // self.episodes
        if repeats == 1:
            return self.params
        return {name: value.repeat_interleave(repeats, dim=0)
                for name, value in self.params.items()}

    def encode_context(
        self, frames: Tensor, actions: Tensor, *, generator: torch.Generator | None = None
    ) -> WorldState:
        """:meth:`SVGWorldModel.encode_context` with the tailored parameters."""
        return self.model.encode_context(frames, actions, self._adapt(frames.shape[0]),
                                         generator=generator)

    def expand(self, state: WorldState, n: int) -> WorldState:
        """:meth:`WorldState.expand`."""
        return state.expand(n)

    def rollout(self, state: WorldState, actions: Tensor, *, decode: bool = False,
                generator: torch.Generator | None = None) -> Rollout:
        """:meth:`SVGWorldModel.rollout` with the tailored parameters."""
        return self.model.rollout(state, actions, self._adapt(state.batch_size), decode=decode,
                                  generator=generator)


def tailor_to_plan(
    noether: NoetherModule,
    model: SVGWorldModel,
    frames: Tensor,
    past_actions: Tensor,
    plan: Tensor,
    steps: int,
    generator: torch.Generator | None = None,
) -> TailoredWorldModel:
    """Tailor the model to each episode's observed frames under a tentative ``plan``.

    Args:
        noether: g_φ and the inner loop's settings (lr, optimizer) of a Noether checkpoint.
        model: the world model it was trained with.
        frames: the episode's last ``T`` observed frames, float ``(E, T, C, S, S)`` or uint8
            ``(E, T, S, S, C)``; ``T`` may exceed the model's context length, and with
            ``include_context`` the true frames then enter the conservation loss too.
        past_actions: ``(E, T - 1, A)``, the actions between those frames.
        plan: ``(E, H, A)``, the actions from the last frame on; the conservation loss runs along
            the ``H`` frames predicted under it.
        steps: inner steps K (0 returns identity parameters).
        generator: the latent draws of a stochastic model.

    Returns:
        The model with the tailored per-episode parameters, detached (planning needs no
        meta-gradient).
    """
    if noether.config.tailored == "all":
        raise ValueError(
            "tailor: expected a checkpoint with noether.tailored=lstm or norm (per-episode "
            "(γ, β) shared by every candidate), got tailored=all"
        )
    context = as_model_frames(frames, model.config)
    episodes, length = context.shape[:2]
    expected = (episodes, length - 1, model.config.action_dim)
    if tuple(past_actions.shape) != expected:
        raise ValueError(f"past_actions: expected {expected} for {length} frames, got "
                         f"{tuple(past_actions.shape)}")
    if plan.dim() != 3 or plan.shape[0] != episodes or plan.shape[2] != model.config.action_dim:
        raise ValueError(f"plan: expected ({episodes}, H, {model.config.action_dim}), got "
                         f"{tuple(plan.shape)}")
    actions = torch.cat([past_actions.to(plan.dtype), plan], dim=1)
    params = noether.tailor(model, context, actions, plan.shape[1], steps=steps,
                            second_order=False, generator=generator)
    return TailoredWorldModel(model, {name: value.detach() for name, value in params.items()})
