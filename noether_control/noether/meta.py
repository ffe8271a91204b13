"""Tailored prediction and meta-training of the SVG world model (Noether Networks, Algorithm 1).

For each example separately, a small set of the world model's parameters is adapted by K
gradient steps (the one inner loop, :func:`noether_control.noether.tailoring.tailor`) so that
the learned embedding g_φ is conserved along the model's own closed-loop prediction; the
prediction is then made with the adapted parameters. Which parameters (``NoetherConfig.tailored``):

``lstm`` (default)
    the per-example modulation ``(γ, β)`` of the frame predictor's top LSTM activations;
``norm``
    the per-example conditional-normalisation ``(γ, β)`` of encoder and decoder (the paper's
    video setting);
``all``
    every model weight, one copy per example (``torch.func.vmap`` over
    :func:`noether_control.models.svg.functional_call`-style verbs; deterministic models only).

Meta-training back-propagates the training loss of the *tailored* model through the inner
steps into the model and g_φ (second order by default; ``inner.second_order=false`` gives the
first-order approximation; ``model_second_order=false`` keeps the second order for g_φ and the
inner lr only). :class:`NoetherModule` holds g_φ (and a learnable inner learning
rate); ``noether-control train`` saves its state in the checkpoint's ``extra["noether"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from noether_control.models.svg import (
    Rollout,
    SVGConfig,
    SVGWorldModel,
    TrainOutput,
    functional_verb,
)
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import ConservedEmbedding, EmbeddingConfig
from noether_control.noether.losses import conservation_loss
from noether_control.noether.tailoring import (
    InnerLearningRate,
    Params,
    StepCallback,
    TailoringConfig,
    expand_params,
    tailor,
)

# The running variance of a scale-free g_φ follows the batches like BatchNorm's running
# statistics; the floor keeps an exactly constant g from dividing by zero.
VARIANCE_MOMENTUM = 0.01
VARIANCE_EPS = 1e-12


class TailoredPrediction(NamedTuple):
    """Frames and rewards predicted after tailoring, and the per-example conservation losses.

    ``frames``: ``(B, H, C, S, S)`` in [0, 1]; ``before``/``after``: ``(B,)`` conservation loss of
    the un-tailored and of the tailored rollout; ``params``: the tailored parameters;
    ``rewards``: ``(B, H - 1)``, the tailored model's rewards of the actions applied to the first
    ``H - 1`` predicted frames (the action applied to the last context frame is part of the
    context, and the last predicted frame has no action); ``untailored_frames``: ``(B, H, C, S,
    S)``, detached, the prediction before the first inner step (``frames`` itself for K = 0).
    """

    frames: Tensor
    before: Tensor
    after: Tensor
    params: Params
    rewards: Tensor
    untailored_frames: Tensor


class NoetherModule(nn.Module):
    """g_φ and the (optionally learned) inner learning rate for one world model.

    Args:
        config: the Noether settings.
        model_config: the world model's architecture (sizes g_φ's input).
    """

    def __init__(self, config: NoetherConfig, model_config: SVGConfig) -> None:
        super().__init__()
        config.validate()
        if config.tailored == "all" and model_config.stochastic:
            raise ValueError("noether.tailored=all: expected a deterministic model "
                             "(model.stochastic=false), got an SVG-LP model")
        if config.embedding.input == "state" and not model_config.state_head:
            raise ValueError("noether.embedding.input=state: expected a model with "
                             "state_head=true, got state_head=false")
        self.config = config
        self.embedding = ConservedEmbedding(
            config.embedding, channels=model_config.channels,
            image_size=model_config.image_size, hidden_size=model_config.rnn_size,
            state_dim=model_config.state_dim, action_dim=model_config.action_dim,
        )
        self.inner_lr = InnerLearningRate(config.inner.lr) if config.inner.learnable_lr else None
        if config.scale_free:
            self.register_buffer("embedding_variance", torch.zeros(()))
            self.register_buffer("variance_updates", torch.zeros((), dtype=torch.long))

    def lr(self) -> float | Tensor:
        """The inner learning rate (a tensor carrying gradient when learnable)."""
        return self.inner_lr() if self.inner_lr is not None else self.config.inner.lr

    # ------------------------------------------------------------------ tailored parameters
    def initial_params(self, model: SVGWorldModel, batch: int, like: Tensor) -> Params:
        """Untailored per-example parameters: identity ``(γ, β)`` or the model's own weights."""
        if self.config.tailored == "all":
            return expand_params(dict(model.named_parameters()), batch)
        identity = model.adapt_init(batch, like.device)
        lstm = self.config.tailored == "lstm"
        return {
            name: value.to(like.dtype) for name, value in identity.items()
            if name.startswith("lstm.") == lstm
        }

    def rollout(
        self,
        model: SVGWorldModel,
        params: Params,
        context: Tensor,
        actions: Tensor,
        horizon: int,
        generator: torch.Generator | None = None,
        *,
        constant_weights: bool = False,
    ) -> Rollout:
        """The model's closed-loop prediction of ``horizon`` frames with tailored ``params``
        (``constant_weights``: with the model's own weights detached, so no gradient reaches
        them through this rollout).

        ``context``: ``(B, P, C, S, S)``; ``actions``: ``(B, ≥ P + horizon - 1, A)``, action
        ``t`` applied to frame ``t``. Returns frames ``(B, horizon, ...)`` (the same as
        ``model.predict``) and the ``horizon - 1`` LSTM activations / predicted states that
        produced frames ``2 … horizon``.
        """
        n_past = context.shape[1]
        future = actions[:, n_past : n_past + horizon - 1]
        if future.shape[1] != horizon - 1:
            raise ValueError(f"actions: expected at least {n_past + horizon - 1} steps for "
                             f"{n_past} context frames and horizon {horizon}, got "
                             f"{actions.shape[1]}")
        # imagine() decodes one frame per action: a trailing dummy action yields the last frame
        # (its own step's outputs are dropped), so frames match predict() exactly.
        future = torch.cat([future, future.new_zeros(future.shape[0], 1, future.shape[2])], 1)
        if self.config.tailored == "all":
            out = torch.func.vmap(self._single_rollout(model))(
                params, context, actions[:, :n_past], future
            )
            frames, rewards, hidden = out[:3]
            states = out[3] if len(out) > 3 else None
        elif constant_weights:
            weights = {name: value.detach() for name, value in model.named_parameters()}
            state = functional_verb(model, weights, "observe", context, actions[:, :n_past],
                                    params, generator=generator)
            frames, rewards, hidden, states = functional_verb(
                model, weights, "imagine", state, future, params, generator=generator)
        else:
            state = model.observe(context, actions[:, :n_past], params, generator=generator)
            frames, rewards, hidden, states = model.imagine(state, future, params,
                                                            generator=generator)
        return Rollout(frames, rewards[:, :-1], hidden[:, :-1],
                       None if states is None else states[:, :-1])

    @staticmethod
    def _single_rollout(model: SVGWorldModel) -> Callable[..., tuple[Tensor, ...]]:
        def single(weights: Params, context: Tensor, past: Tensor, future: Tensor
                   ) -> tuple[Tensor, ...]:
            state = functional_verb(model, weights, "observe", context[None], past[None])
            out = functional_verb(model, weights, "imagine", state, future[None])
            parts = (out.frames[0], out.rewards[0], out.hidden[0])
            return parts + ((out.states[0],) if out.states is not None else ())

        return single

    def embed(self, rollout: Rollout, context: Tensor, actions: Tensor | None = None) -> Tensor:
        """g_φ along a rollout ``(B, T', k)`` (with the true context frames when configured).

        ``actions`` ``(B, ≥ P + H - 1, A)``, action ``t`` applied to frame ``t`` of the window
        (context first), are needed by an ``action_work`` embedding only.
        """
        source = self.config.embedding.input
        if source == "hidden":
            return self.embedding(rollout.hidden)
        if source == "state":
            if rollout.states is None:
                raise ValueError("state embedding: expected a model with a state head, got none")
            return self.embedding(rollout.states)
        frames = rollout.frames
        first = 0 if self.config.include_context else context.shape[1]
        if self.config.include_context:
            frames = torch.cat([context.to(frames.dtype), frames], dim=1)
        return self.embedding(frames, None if actions is None else actions[:, first:])

    def conservation(self, rollout: Rollout, context: Tensor,
                     actions: Tensor | None = None) -> Tensor:
        """Per-example conservation loss ``(B,)`` of g_φ along ``rollout`` (divided by g_φ's
        variance with ``scale_free``); ``actions`` as for :meth:`embed`."""
        return self.conservation_of(self.embed(rollout, context, actions))

    def conservation_of(self, embeddings: Tensor) -> Tensor:
        """:meth:`conservation` of g_φ's values ``(B, T', k)`` already computed by :meth:`embed`."""
        loss = conservation_loss(embeddings, self.config.loss)
        if not self.config.scale_free:
            return loss
        return loss / self.variance(embeddings)

    def variance(self, embeddings: Tensor) -> Tensor:
        """g_φ's total variance, summed over the k dimensions.

        While meta-training with B > 1: the variance of ``embeddings`` ``(B, T', k)`` over
        examples and steps (differentiable), folded into a running average. Otherwise (test
        time, one example alone): the bias-corrected running average, or, before any
        meta-training step, the variance of ``embeddings`` itself.
        """
        meta_training = self.training and embeddings.shape[0] > 1
        updates = int(self.variance_updates)
        if updates > 0 and not meta_training:
            seen = 1.0 - (1.0 - VARIANCE_MOMENTUM) ** updates
            return self.embedding_variance / seen + VARIANCE_EPS
        own = total_variance(embeddings)
        if not meta_training:
            return own.detach() + VARIANCE_EPS
        with torch.no_grad():
            self.embedding_variance.lerp_(own.detach().to(self.embedding_variance.dtype),
                                          VARIANCE_MOMENTUM)
            self.variance_updates += 1
        return own + VARIANCE_EPS

    def tailor(
        self,
        model: SVGWorldModel,
        context: Tensor,
        actions: Tensor,
        horizon: int,
        *,
        steps: int | None = None,
        second_order: bool | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        on_rollout: Callable[[int, Rollout, Tensor], None] | None = None,
    ) -> Params:
        """Per-example parameters after ``steps`` (default ``inner.steps``) inner steps.

        Each inner step rolls the model out ``horizon`` frames in closed loop from ``context``
        ``(B, P, C, S, S)`` under ``actions`` ``(B, ≥ P + horizon - 1, A)`` and descends the
        conservation loss. A stochastic model replays the same latent draws at every step.
        ``callback(step, losses)`` and ``on_rollout(step, rollout, embeddings)`` see the losses
        ``(B,)``, and the rollout and g_φ's values along it ``(B, T', k)`` (still carrying the
        inner loop's graph), of the parameters after ``step`` inner steps (``step < steps``).
        """
        shortest = self.config.min_horizon(context.shape[1])
        if horizon < shortest:
            raise ValueError(
                f"horizon: the conservation loss compares g_φ at >= 2 points of the predicted "
                f"rollout; expected >= {shortest} predicted frames with "
                f"noether.embedding.input={self.config.embedding.input!r}, got {horizon}"
            )
        inner = self.config.inner
        steps = inner.steps if steps is None else steps
        initial = self.initial_params(model, context.shape[0], context)
        start = generator.get_state() if generator is not None else None

        calls = [0]

        def loss(params: Params, _: Any) -> Tensor:
            if generator is not None:
                generator.set_state(start)
            rollout = self.rollout(model, params, context, actions, horizon, generator,
                                   constant_weights=not self.config.model_second_order)
            embeddings = self.embed(rollout, context, actions)
            if on_rollout is not None:
                on_rollout(calls[0], rollout, embeddings)
            calls[0] += 1
            return self.conservation_of(embeddings)

        return tailor(
            initial, None, loss, steps=steps, lr=self.lr(), optimizer=inner.optimizer,
            second_order=inner.second_order if second_order is None else second_order,
            adam_betas=inner.adam_betas, adam_eps=inner.adam_eps, callback=callback,
        )

    def predict(self, model: SVGWorldModel, context: Tensor, actions: Tensor, horizon: int, *,
                steps: int | None = None, generator: torch.Generator | None = None
                ) -> TailoredPrediction:
        """Tailor with ``steps`` inner steps (default: ``test_inner_steps``), then predict.

        With ``steps=0`` the frames equal ``model.predict(context, actions, horizon)`` exactly.
        Works under ``torch.no_grad()`` (the inner loop enables gradients for itself); the
        result carries no graph to the model then.
        """
        steps = self.config.test_steps(steps)
        first: list[Tensor] = []
        untailored: list[Tensor] = []

        def record(step: int, losses: Tensor) -> None:
            if step == 0:
                first.append(losses)

        def keep_untailored(step: int, rollout: Rollout, _: Tensor) -> None:
            if step == 0:
                untailored.append(rollout.frames.detach())

        start = generator.get_state() if generator is not None else None
        params = self.tailor(model, context, actions, horizon, steps=steps,
                             second_order=torch.is_grad_enabled(), generator=generator,
                             callback=record, on_rollout=keep_untailored)
        if generator is not None:
            generator.set_state(start)  # the tailored rollout replays the inner loop's draws
        rollout = self.rollout(model, params, context, actions, horizon, generator)
        after = self.conservation(rollout, context, actions)
        before = first[0] if first else after
        return TailoredPrediction(rollout.frames, before.detach(), after.detach(), params,
                                  rollout.rewards,
                                  untailored[0] if untailored else rollout.frames.detach())

    # ------------------------------------------------------------------ meta-training
    def train_forward(self, model: SVGWorldModel, frames: Tensor, actions: Tensor, n_past: int,
                      teacher: Tensor | None = None, noise: Tensor | None = None,
                      reconstruct: bool = False) -> tuple[TrainOutput, dict[str, Tensor]]:
        """The training unroll of ``model.forward`` with parameters tailored per example.

        ``frames`` ``(B, T, C, S, S)``, ``actions`` ``(B, T, A)``, ``teacher``, ``noise`` and
        ``reconstruct`` as for :meth:`SVGWorldModel.forward` (with ``tailored=all`` the
        per-example weights are vmapped over the teacher-forced unroll). The
        inner loop conserves g_φ along the closed-loop prediction of frames ``n_past … T-1``
        from the context, exactly as at test time; the returned output is differentiable
        through it (second order unless ``inner.second_order=false``) into the model, g_φ and a
        learnable lr. Metrics, all detached: the mean conservation loss before tailoring
        (``train/conservation``), g_φ's variance over the batch's untailored predictions
        (``train/embedding_variance``: its scale, which sets the inner gradient's), the mean
        per-example length of the whole inner update (``train/inner_step``) and the inner lr
        (``train/inner_lr``).
        """
        horizon = frames.shape[1] - n_past
        first: list[Tensor] = []
        spread: list[Tensor] = []

        def record(step: int, losses: Tensor) -> None:
            if step == 0:
                first.append(losses.mean())

        def measure_spread(step: int, _: Rollout, embeddings: Tensor) -> None:
            if step == 0:
                spread.append(total_variance(embeddings.detach()))

        context = frames[:, :n_past]
        params = self.tailor(model, context, actions, horizon, callback=record,
                             on_rollout=measure_spread)
        if self.config.tailored == "all":
            if teacher is not None or noise is not None:
                raise ValueError("noether.tailored=all trains with train.rollout=teacher on a "
                                 "deterministic model; got scheduled/closed inputs")

            def single(weights: Params, window: Tensor, acts: Tensor) -> dict[str, Tensor]:
                out = functional_verb(model, weights, "forward", window[None], acts[None], n_past,
                                      reconstruct=reconstruct)
                return {name: value[0] for name, value in out._asdict().items()
                        if value is not None}

            fields = torch.func.vmap(single)(params, frames, actions)
            out = TrainOutput(**{name: fields.get(name) for name in TrainOutput._fields})
        else:
            out = model(frames, actions, n_past, teacher=teacher, noise=noise, adapt=params,
                        reconstruct=reconstruct)
        metrics = {"train/inner_step": self.step_length(model, params, context),
                   "train/inner_lr": torch.as_tensor(self.lr(), device=frames.device)
                   .detach().float().reshape(())}
        if first:
            metrics["train/conservation"] = first[0].detach()
            metrics["train/embedding_variance"] = spread[0]
        return out, metrics

    def step_length(self, model: SVGWorldModel, params: Params, like: Tensor) -> Tensor:
        """Mean over examples of ``‖params − untailored‖₂`` over all tailored parameters
        (detached): how far the inner loop moved each example's model."""
        batch = like.shape[0]
        initial = self.initial_params(model, batch, like)
        squares = [(params[name].detach() - value.detach()).reshape(batch, -1).float().square()
                   .sum(1) for name, value in initial.items()]
        return torch.stack(squares).sum(0).sqrt().mean()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint's ``extra["noether"]``: config and state dict."""
        config = asdict(self.config)
        config["inner"]["adam_betas"] = list(self.config.inner.adam_betas)
        return {"config": config, "state": self.state_dict()}


def total_variance(embeddings: Tensor) -> Tensor:
    """g_φ's variance over examples and steps of ``embeddings`` ``(B, T', k)``, summed over the
    k dimensions (in at least float32)."""
    wide = torch.promote_types(embeddings.dtype, torch.float32)
    return embeddings.flatten(0, 1).to(wide).var(0, correction=0).sum()


def noether_config_from(stored: dict[str, Any]) -> NoetherConfig:
    """Rebuild a :class:`NoetherConfig` from :meth:`NoetherModule.checkpoint_state`'s dict."""
    values = dict(stored)
    values["embedding"] = EmbeddingConfig(**values["embedding"])
    inner = dict(values["inner"])
    inner["adam_betas"] = tuple(inner["adam_betas"])
    values["inner"] = TailoringConfig(**inner)
    return NoetherConfig(**values)


def load_noether(payload: dict[str, Any], model: SVGWorldModel) -> NoetherModule | None:
    """The :class:`NoetherModule` stored in a checkpoint dict, or ``None`` for a baseline.

    ``payload`` is what ``noether_control.models.checkpoint.read_checkpoint`` returns.
    """
    stored = (payload.get("extra") or {}).get("noether")
    if not stored:
        return None
    module = NoetherModule(noether_config_from(stored["config"]), model.config)
    module.load_state_dict(stored["state"])
    device = next(model.parameters()).device
    return module.to(device).eval()
