"""The action-conditioned SVG video world model (Denton & Fergus 2018, as in Noether Networks).

A convolutional encoder maps each frame to a code ``g``; an LSTM frame predictor takes, at step
``t``, the code of frame ``t`` concatenated with the embedded action ``t`` (and, for SVG-LP, a
latent ``z_t``), and its output is decoded — with skip features of the last context frame — into
frame ``t + 1``. A reward head reads the LSTM's top hidden state (the reward of applying action
``t`` in frame ``t``) and an optional head regresses the true low-dimensional state of frame
``t + 1``.

Functional verbs, batch first::

    state = model.observe(frames, actions)          # encode the context (B, P, C, H, W), (B, P, A)
    rollout = model.imagine(state, actions)        # closed loop: frames, rewards, hidden
    frames = model.predict(frames, actions, n_future)

Planning verbs (:class:`noether_control.models.planning.PlanningModel`), for a planner that
scores candidate action sequences by their predicted rewards::

    state = model.encode_context(frames, actions)   # P frames, the P - 1 actions between them
    state = model.expand(state, n)                  # every row repeated for n candidates
    rewards = model.rollout(state, actions).rewards # (B, H) without decoding a frame

Per-example adaptation: every verb takes ``adapt``, a dict of per-example tensors (see
:meth:`SVGWorldModel.adapt_init`): ``(γ, β)`` of every normalisation layer (``(B, C)`` each) and
of the LSTM output (``"lstm.gamma"``/``"lstm.beta"``, ``(B, rnn_size)``). The verbs are plain
functions of parameters and inputs, so ``torch.func.functional_call`` / ``grad`` / ``vmap`` work.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from noether_control.models.layers import (
    CODE_HEADS,
    Adapt,
    FrameDecoder,
    FrameEncoder,
    LSTMStack,
    norm_layers,
)

ENCODER_KINDS = ("dcgan", "vgg")
FEEDBACKS = ("latent", "pixels")
REWARD_INPUTS = ("hidden", "hidden_code", "hidden_code_motion", "code_motion")
REWARD_OUTPUTS = ("reward", "root_cost")
# Fields that change how the weights are run, not which weights exist: a run may continue a
# checkpoint with other values (e.g. fine-tune a latent-feedback model with pixel feedback, or
# a reward head into one that predicts the cost's square root).
RUN_TIME_FIELDS = ("feedback", "reward_output")


@dataclass
class SVGConfig:
    """Architecture of :class:`SVGWorldModel`.

    The data-dependent fields (``image_size``, ``channels``, ``action_dim``, ``state_dim``) are
    filled in from the dataset by ``noether-control train``; the rest come from ``conf/model``.
    """

    image_size: int = 64
    """Frame height and width in pixels: a power of two, 32 to 256."""
    channels: int = 3
    """Colour channels per frame."""
    action_dim: int = 1
    """Dimension of one action."""
    state_dim: int = 0
    """Dimension of the true low-dimensional state (only used when ``state_head``)."""
    encoder: str = "dcgan"
    """``"dcgan"`` (strided 4×4 convs, CPU sized) or ``"vgg"`` (3×3 conv pairs, larger)."""
    width: int = 16
    """Channels of the first encoder stage; doubles per stage up to 8×."""
    g_dim: int = 64
    """Frame code size (encoder output, LSTM output)."""
    code_head: str = "keypoints"
    """How the encoder makes the code: ``"keypoints"`` (spatial soft-argmax on the 16×16 stage,
    learns in far fewer steps) or ``"conv"`` (SVG's 4×4 convolution of the last stage)."""
    keypoints: int = 16
    """Soft-argmax keypoints of the ``"keypoints"`` code head."""
    predict_change: bool = True
    """The predictor outputs the change of the code, ``ĝ_{t+1} = g_t + W h_t`` with ``W``
    starting at zero, so an untrained model already predicts "no motion"; SVG's
    ``ĝ_{t+1} = tanh(W h_t)`` (``false``) must first learn to copy the code, which the demo-scale
    run had not managed after 700 steps (its one-step latent error was 4× that of copying)."""
    skips: bool = False
    """SVG's skip connections: the decoder also reads the encoder features of the last context
    frame (a static background then costs nothing). Off by default: on the pendulums' plain
    background they only let the decoder start from the context frame, and the demo-scale model
    was worse with them (MSE at horizon 10: 9.20e-3 with, 8.64e-3 without; docs/world_model.md).
    Off, every frame is decoded from its code alone, as the reconstruction loss trains it."""
    feedback: str = "latent"
    """What the predictor reads after the context, in closed loop: ``"latent"`` its own predicted
    code (trained towards the encoder's code by ``train.latent_weight``; no decode/re-encode
    round trip, so errors do not pass through pixels) or ``"pixels"`` (SVG's: the code of the
    decoded prediction)."""
    rnn_size: int = 128
    """LSTM hidden units per layer."""
    rnn_layers: int = 2
    """Stacked LSTM layers of the frame predictor."""
    action_embed_dim: int = 16
    """Size of the linear action embedding concatenated to the frame code."""
    stochastic: bool = False
    """SVG-LP: a learned Gaussian prior/posterior latent ``z_t`` per step, with a KL term."""
    z_dim: int = 16
    """Size of ``z_t`` (SVG-LP only)."""
    posterior_rnn_size: int = 128
    """Hidden units of the prior and posterior LSTMs (SVG-LP only)."""
    reward_head: bool = True
    """Predict the reward of (frame t, action t) from the LSTM state."""
    reward_input: str = "hidden"
    """What the reward head reads: ``"hidden"`` (the LSTM's top output after the step),
    ``"hidden_code"`` (that, frame t's code and action t), ``"hidden_code_motion"`` (those and
    the predicted change of the code to frame t + 1, which carries the velocity a single frame
    lacks) or ``"code_motion"`` (the code, action and code change without the LSTM state, so
    the head cannot read the action history). A pendulum's reward is a function of frame t's
    state, which its code holds directly; refit on a frozen 20 000-step model, the head's
    error within 0.1 rad of upright fell from 0.059 to 0.028 with the code
    (``benchmarks/reward_refit.py``, docs/rl.md)."""
    reward_output: str = "reward"
    """What the reward head's output ``y`` is: ``"reward"`` (the reward itself) or
    ``"root_cost"`` (``√(−reward)`` of a reward that is a negated cost, read as ``−y²`` and
    fitted in that space, see :func:`reward_loss`). Near the pendulum's upright the rewards of
    neighbouring states differ by hundredths; the square root spreads them apart, so the same
    head error costs the planner less there (docs/rl.md)."""
    state_head: bool = False
    """Regress the true state of the predicted frame from the LSTM state (diagnostics)."""

    @property
    def latent_size(self) -> int:
        """Length of :meth:`WorldState.latent`: the code and the LSTM's ``h`` and ``c``."""
        return self.g_dim + 2 * self.rnn_layers * self.rnn_size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that cannot build a model."""
        log = math.log2(self.image_size) if self.image_size > 0 else -1.0
        if not (log.is_integer() and 5 <= log <= 8):
            raise ValueError(
                f"model.image_size: expected a power of two from 32 to 256, got {self.image_size}"
            )
        if self.encoder not in ENCODER_KINDS:
            raise ValueError(
                f"model.encoder: expected one of {ENCODER_KINDS}, got {self.encoder!r}"
            )
        if self.feedback not in FEEDBACKS:
            raise ValueError(
                f"model.feedback: expected one of {FEEDBACKS}, got {self.feedback!r}"
            )
        if self.reward_input not in REWARD_INPUTS:
            raise ValueError(
                f"model.reward_input: expected one of {REWARD_INPUTS}, got {self.reward_input!r}"
            )
        if self.reward_output not in REWARD_OUTPUTS:
            raise ValueError(
                f"model.reward_output: expected one of {REWARD_OUTPUTS}, got "
                f"{self.reward_output!r}"
            )
        if self.code_head not in CODE_HEADS:
            raise ValueError(
                f"model.code_head: expected one of {CODE_HEADS}, got {self.code_head!r}"
            )
        for name in ("channels", "action_dim", "width", "g_dim", "rnn_size", "rnn_layers",
                     "action_embed_dim", "z_dim", "posterior_rnn_size", "keypoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}: expected a positive integer, got "
                                 f"{getattr(self, name)}")
        if self.state_head and self.state_dim < 1:
            raise ValueError(
                f"model.state_dim: expected ≥ 1 with state_head=true, got {self.state_dim}"
            )


def as_model_frames(frames: Tensor, config: SVGConfig) -> Tensor:
    """Frames as the model reads them: float ``(B, P, C, S, S)`` in [0, 1].

    Accepts that layout, or uint8 ``(B, P, S, S, C)`` as the environments render them (converted
    on ``frames``' device). Raises ``ValueError`` for any other shape or dtype.
    """
    size, channels = config.image_size, config.channels
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames: expected a tensor, got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (size, size, channels):
            raise ValueError(
                f"frames: expected uint8 (B, P, {size}, {size}, {channels}) as the env renders "
                f"them (the model was trained on {size}px frames), got {tuple(frames.shape)}"
            )
        return frames.permute(0, 1, 4, 2, 3).float().div(255.0)
    if not frames.is_floating_point() or frames.dim() != 5 or tuple(frames.shape[2:]) != (
            channels, size, size):
        raise ValueError(
            f"frames: expected float (B, P, {channels}, {size}, {size}) in [0, 1] or uint8 "
            f"(B, P, {size}, {size}, {channels}), got {frames.dtype} {tuple(frames.shape)}; the "
            f"model was trained on {size}px {channels}-channel frames"
        )
    return frames


def reward_loss(predicted: Tensor, target: Tensor, reward_output: str) -> Tensor:
    """Mean squared error of ``predicted`` rewards against ``target`` rewards (same shape), in
    the space the reward head predicts (``model.reward_output``).

    For ``"root_cost"`` the error is between ``√(−predicted)`` (the head's ``|y|``) and
    ``√(max(−target, 0))``; the small constant under the root keeps its gradient finite where
    the head predicts a zero cost.
    """
    if reward_output == "root_cost":
        predicted_root = (-predicted).clamp_min(0).add(1e-8).sqrt()
        return (predicted_root - (-target).clamp_min(0).sqrt()).pow(2).mean()
    return (predicted - target).pow(2).mean()


class WorldState(NamedTuple):
    """The model's belief after observing a context (all tensors batch first).

    ``lstm``: ``(h, c)``, each ``(layers, B, rnn_size)``; ``code``: ``(B, g_dim)``, the code the
    next predictor step reads; ``skips``: encoder features of the last context frame;
    ``prior``: the prior LSTM's ``(h, c)`` (SVG-LP) or ``None``; ``observed``: whether ``code``
    is the encoder's code of a true frame (:meth:`SVGWorldModel.encode_context`) rather than the
    predictor's code of the next frame (:meth:`SVGWorldModel.observe`). An observed code is read
    as it is; a predicted one goes through the pixels first when ``feedback == "pixels"``.
    """

    lstm: tuple[Tensor, Tensor]
    code: Tensor
    skips: list[Tensor]
    prior: tuple[Tensor, Tensor] | None
    observed: bool = False

    @property
    def batch_size(self) -> int:
        """B, the number of rows (examples, or episodes × candidates)."""
        return self.code.shape[0]

    def expand(self, n: int) -> WorldState:
        """Every row repeated ``n`` times, row-major: row ``b`` becomes rows ``b·n … b·n + n-1``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an int >= 1 (candidates per state), got {n!r}")

        def rows(value: Tensor) -> Tensor:
            return value.repeat_interleave(n, dim=0)

        def lstm_rows(pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return pair[0].repeat_interleave(n, dim=1), pair[1].repeat_interleave(n, dim=1)

        return WorldState(
            lstm_rows(self.lstm), rows(self.code), [rows(s) for s in self.skips],
            None if self.prior is None else lstm_rows(self.prior), self.observed,
        )

    def latent(self) -> Tensor:
        """The state as one flat vector per row: code ⊕ LSTM ``h`` ⊕ LSTM ``c`` (every layer),
        ``(B, g_dim + 2 · layers · rnn_size)``. For a deterministic model with latent feedback
        it determines every later prediction (an SVG-LP prior's state is not included)."""
        h, c = self.lstm
        return torch.cat([self.code, h.transpose(0, 1).flatten(1), c.transpose(0, 1).flatten(1)],
                         dim=1)

    def rows(self, index: Tensor) -> WorldState:
        """The rows ``index`` ``(R,)`` of the batch, as a state of ``R`` rows."""
        def pick(pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return pair[0][:, index], pair[1][:, index]

        return WorldState(pick(self.lstm), self.code[index], [s[index] for s in self.skips],
                          None if self.prior is None else pick(self.prior), self.observed)

    def with_rows(self, index: Tensor, other: WorldState) -> WorldState:
        """A copy whose rows ``index`` ``(R,)`` are ``other``'s ``R`` rows (e.g. restarted
        episodes of a batch); ``observed`` must agree."""
        if other.batch_size != index.numel():
            raise ValueError(f"other: expected {index.numel()} rows for the index, got "
                             f"{other.batch_size}")
        if other.observed != self.observed:
            raise ValueError("other: expected a state of the same kind (observed flag)")

        def put(value: Tensor, rows: Tensor, dim: int = 0) -> Tensor:
            return value.index_copy(dim, index, rows.to(value.dtype))

        def put_lstm(pair: tuple[Tensor, Tensor], rows: tuple[Tensor, Tensor]
                     ) -> tuple[Tensor, Tensor]:
            return put(pair[0], rows[0], 1), put(pair[1], rows[1], 1)

        prior = None
        if self.prior is not None and other.prior is not None:
            prior = put_lstm(self.prior, other.prior)
        return WorldState(put_lstm(self.lstm, other.lstm), put(self.code, other.code),
                          [put(mine, theirs) for mine, theirs in zip(self.skips, other.skips,
                                                                     strict=True)],
                          prior, self.observed)


class Rollout(NamedTuple):
    """A closed-loop imagined rollout of ``H`` steps.

    ``frames``: ``(B, H, C, H_img, W_img)`` in [0, 1], frame ``k`` being the one action ``k``
    is applied to (``None`` when the rollout was asked not to decode); ``rewards``: ``(B, H)``,
    reward of action ``k`` in frame ``k`` (zeros without a reward head); ``hidden``:
    ``(B, H, rnn_size)``, the (adapted) top LSTM output after step ``k``;
    ``states``: ``(B, H, state_dim)`` predicted true state of frame ``k + 1``, or ``None``.
    """

    frames: Tensor | None
    rewards: Tensor
    hidden: Tensor
    states: Tensor | None


class StepOutput(NamedTuple):
    """One predictor step: the next code ``(B, g_dim)``, reward ``(B,)``, hidden, state."""

    code: Tensor
    reward: Tensor
    hidden: Tensor
    state_pred: Tensor | None


class CodeUnroll(NamedTuple):
    """What :meth:`SVGWorldModel.unroll_codes` predicts over a window of ``T`` codes.

    Attributes:
        codes: ``(B, T - 1, g_dim)`` predicted codes of frames ``1 … T-1``.
        rewards: ``(B, T - 1)`` reward head outputs (zeros without a reward head).
        states: ``(B, T - 1, state_dim)`` state head outputs, or ``None``.
        frames: ``(B, T - 1, C, H, W)`` the decoded predictions fed back through pixels, or
            ``None`` when nothing was (latent feedback, or teacher forcing throughout).
        kl: ``(B,)`` SVG-LP's summed KL(posterior ‖ prior); zeros when deterministic.
    """

    codes: Tensor
    rewards: Tensor
    states: Tensor | None
    frames: Tensor | None
    kl: Tensor


class TrainOutput(NamedTuple):
    """The training unroll over a window of ``T`` frames (see :meth:`SVGWorldModel.forward`).

    ``frames``: ``(B, T-1, C, H, W)`` predictions of frames ``1 … T-1``; ``rewards``:
    ``(B, T-1)`` predicted rewards of actions ``0 … T-2``; ``states``: ``(B, T-1, state_dim)``
    predicted true states of frames ``1 … T-1`` or ``None``; ``kl``: ``(B,)`` SVG-LP KL summed
    over steps (zeros when deterministic); ``reconstructions``: ``(B, T, C, H, W)`` every frame
    of the window decoded from its own code with no skip features, or ``None`` (see
    ``reconstruct`` in :meth:`SVGWorldModel.forward`); ``codes``: ``(B, T, g_dim)`` the
    encoder's code of every true frame; ``predicted_codes``: ``(B, T-1, g_dim)`` the
    predictor's codes of frames ``1 … T-1`` (what ``frames`` were decoded from).
    """

    frames: Tensor
    rewards: Tensor
    states: Tensor | None
    kl: Tensor
    reconstructions: Tensor | None = None
    codes: Tensor | None = None
    predicted_codes: Tensor | None = None


class SVGWorldModel(nn.Module):
    """Action-conditioned SVG: encoder, LSTM frame predictor, decoder, reward/state heads."""

    def __init__(self, config: SVGConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.detach_carry = False
        c = config
        self.encoder = FrameEncoder(
            c.encoder, c.channels, c.image_size, c.width, c.g_dim, c.code_head, c.keypoints,
            c.skips,
        )
        self.decoder = FrameDecoder(
            c.encoder, c.channels, c.image_size, c.width, c.g_dim, c.skips
        )
        self.action_embed = nn.Linear(c.action_dim, c.action_embed_dim)
        predictor_in = c.g_dim + c.action_embed_dim + (c.z_dim if c.stochastic else 0)
        self.predictor = LSTMStack(predictor_in, c.rnn_size, c.rnn_layers)
        self.predictor_out = nn.Linear(c.rnn_size, c.g_dim)
        if c.predict_change:
            nn.init.zeros_(self.predictor_out.weight)
            nn.init.zeros_(self.predictor_out.bias)
        if c.stochastic:
            # Posterior q(z_t | x_{t+1}) and prior p(z_t | x_t), each a 1-layer LSTM + Gaussian.
            self.posterior = LSTMStack(c.g_dim, c.posterior_rnn_size, 1)
            self.posterior_out = nn.Linear(c.posterior_rnn_size, 2 * c.z_dim)
            self.prior = LSTMStack(c.g_dim, c.posterior_rnn_size, 1)
            self.prior_out = nn.Linear(c.posterior_rnn_size, 2 * c.z_dim)
        if c.reward_head:
            code_motion = 2 * c.g_dim + c.action_dim  # code, action, code change
            reward_in = {"hidden": c.rnn_size, "hidden_code": c.rnn_size + c.g_dim + c.action_dim,
                         "hidden_code_motion": c.rnn_size + code_motion,
                         "code_motion": code_motion}[c.reward_input]
            self.reward_net = nn.Sequential(
                nn.Linear(reward_in, c.rnn_size), nn.ELU(), nn.Linear(c.rnn_size, 1)
            )
        if c.state_head:
            self.state_net = nn.Linear(c.rnn_size, c.state_dim)

    # ------------------------------------------------------------------ adaptation interface
    def adapt_shapes(self) -> dict[str, int]:
        """Per-example adaptable inputs: name → feature size (each is passed as ``(B, size)``)."""
        shapes: dict[str, int] = {}
        for layer in norm_layers(self):
            shapes[f"{layer.key}.gamma"] = layer.channels
            shapes[f"{layer.key}.beta"] = layer.channels
        shapes["lstm.gamma"] = self.config.rnn_size
        shapes["lstm.beta"] = self.config.rnn_size
        return shapes

    def adapt_init(self, batch: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Identity adaptation for ``batch`` examples: ``γ = 1``, ``β = 0``, float32 ``(B, C)``."""
        device = device if device is not None else next(self.parameters()).device
        return {
            name: (torch.ones if name.endswith(".gamma") else torch.zeros)(
                batch, size, device=device
            )
            for name, size in self.adapt_shapes().items()
        }

    # ------------------------------------------------------------------ input checks
    def check_inputs(self, frames: Tensor, actions: Tensor, min_actions: int) -> None:
        """Raise ``ValueError`` unless frames ``(B, T, C, S, S)`` and actions ``(B, ≥n, A)`` fit."""
        c = self.config
        if not isinstance(frames, Tensor) or not isinstance(actions, Tensor):
            raise TypeError(
                f"expected tensors for frames and actions, got {type(frames).__name__} and "
                f"{type(actions).__name__}"
            )
        expected = (c.channels, c.image_size, c.image_size)
        if frames.dim() != 5 or tuple(frames.shape[2:]) != expected:
            raise ValueError(
                f"frames: expected shape (B, T, {c.channels}, {c.image_size}, {c.image_size}), "
                f"got {tuple(frames.shape)}; the model was trained on {c.image_size}px "
                f"{c.channels}-channel frames"
            )
        if actions.dim() != 3 or actions.shape[2] != c.action_dim:
            raise ValueError(
                f"actions: expected shape (B, T, {c.action_dim}) (action_dim {c.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        if actions.shape[0] != frames.shape[0]:
            raise ValueError(
                f"expected frames and actions with the same batch size, got {frames.shape[0]} "
                f"and {actions.shape[0]}"
            )
        if frames.shape[1] < 1:
            raise ValueError(f"frames: expected at least one context frame, got {frames.shape[1]}")
        if actions.shape[1] < min_actions:
            raise ValueError(
                f"actions: expected at least {min_actions} steps, got {actions.shape[1]}"
            )

    def check_adapt(self, adapt: Adapt | None, batch: int) -> None:
        """Raise ``ValueError`` unless every ``adapt`` entry is a known ``(batch, size)`` one.

        Layers read per-example entries row by row, so a wrong batch would silently hand one
        example's adaptation to another.
        """
        if not adapt:
            return
        shapes = self.adapt_shapes()
        for name, value in adapt.items():
            if name not in shapes:
                raise ValueError(f"adapt: unknown entry {name!r}; expected names from "
                                 f"adapt_shapes()")
            if tuple(value.shape) != (batch, shapes[name]):
                raise ValueError(f"adapt[{name!r}]: expected shape ({batch}, {shapes[name]}), "
                                 f"got {tuple(value.shape)}")

    # ------------------------------------------------------------------ functional verbs
    def encode(self, frames: Tensor, adapt: Adapt | None = None) -> tuple[Tensor, list[Tensor]]:
        """``frames``: ``(B, C, H, W)`` in [0, 1] → code ``(B, g_dim)``, skip features."""
        return self.encoder(frames, adapt)

    def decode(self, code: Tensor, skips: list[Tensor], adapt: Adapt | None = None) -> Tensor:
        """``code``: ``(B, g_dim)``, ``skips`` of a context frame → frame ``(B, C, H, W)``."""
        return self.decoder(code, skips, adapt)

    def step(
        self,
        code: Tensor,
        action: Tensor,
        lstm: tuple[Tensor, Tensor],
        z: Tensor | None = None,
        adapt: Adapt | None = None,
    ) -> tuple[StepOutput, tuple[Tensor, Tensor]]:
        """One predictor step from frame ``t``'s code ``(B, g_dim)`` and action ``(B, A)``.

        Returns the predicted code of frame ``t + 1``, the reward ``(B,)`` of the action, the
        top hidden ``(B, rnn_size)`` (after the LSTM modulation) and the new LSTM state.
        """
        parts = [code, self.action_embed(action)]
        if self.config.stochastic:
            if z is None:
                raise ValueError("stochastic model: expected a latent z for each step, got None")
            parts.append(z)
        hidden, lstm = self.predictor(torch.cat(parts, dim=-1), lstm)
        if adapt:
            gamma = adapt.get("lstm.gamma")
            beta = adapt.get("lstm.beta")
            if gamma is not None:
                hidden = hidden * gamma
            if beta is not None:
                hidden = hidden + beta
        next_code = (
            code + self.predictor_out(hidden)
            if self.config.predict_change
            else torch.tanh(self.predictor_out(hidden))
        )
        reward = (
            self._reward(self.reward_net(
                self._reward_features(hidden, code, action, next_code)).squeeze(-1))
            if self.config.reward_head
            else hidden.new_zeros(hidden.shape[0])
        )
        state_pred = self.state_net(hidden) if self.config.state_head else None
        return StepOutput(next_code, reward, hidden, state_pred), lstm

    def _reward(self, head_output: Tensor) -> Tensor:
        """The reward ``(B,)`` the head's output ``(B,)`` stands for (``model.reward_output``)."""
        if self.config.reward_output == "root_cost":
            return -head_output.pow(2)
        return head_output

    def _reward_features(self, hidden: Tensor, code: Tensor, action: Tensor,
                         next_code: Tensor) -> Tensor:
        """The reward head's input ``(B, ·)`` for ``model.reward_input``."""
        if self.config.reward_input == "hidden_code":
            return torch.cat([hidden, code, action], dim=-1)
        if self.config.reward_input == "hidden_code_motion":
            return torch.cat([hidden, code, action, next_code - code], dim=-1)
        if self.config.reward_input == "code_motion":
            return torch.cat([code, action, next_code - code], dim=-1)
        return hidden

    def gaussian(
        self, which: str, code: Tensor, lstm: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """SVG-LP prior or posterior (``which``) on a code ``(B, g_dim)``: mean, log-var, state."""
        net, out = (self.prior, self.prior_out) if which == "prior" else (
            self.posterior, self.posterior_out
        )
        hidden, lstm = net(code, lstm)
        mean, logvar = out(hidden).chunk(2, dim=-1)
        return mean, logvar, lstm

    def observe(self, frames: Tensor, actions: Tensor, adapt: Adapt | None = None, *,
                generator: torch.Generator | None = None) -> WorldState:
        """Encode a context: ``frames`` ``(B, P, C, H, W)`` in [0, 1], ``actions`` ``(B, P, A)``.

        Action ``t`` is the one applied to frame ``t``; after the call the state predicts frame
        ``P``. SVG-LP (as in Denton & Fergus) draws ``z_t`` from the posterior while the next frame
        is known (``t < P - 1``) and from the prior for the last step; ``generator`` draws the
        noise (ignored when deterministic).
        """
        self.check_inputs(frames, actions, frames.shape[1])
        self.check_adapt(adapt, frames.shape[0])
        codes, last_skips = self.encode_frames(frames, adapt)
        lstm, code, prior = self._context_steps(codes, actions, frames.shape[1], adapt, generator)
        return WorldState(lstm, code, last_skips, prior)

    def encode_context(self, frames: Tensor, actions: Tensor, adapt: Adapt | None = None, *,
                       generator: torch.Generator | None = None) -> WorldState:
        """The state *before* the decision action, from ``P`` frames and the actions between.

        ``frames``: ``(B, P, C, S, S)`` float in [0, 1], or ``(B, P, S, S, C)`` uint8 as the
        environments give them; ``actions``: ``(B, P - 1, A)``, action ``t`` applied to frame
        ``t``. Every frame is encoded once; the predictor steps through the first ``P - 1``, and
        the state holds the code of the last, observed frame, which the next action (the one a
        planner decides) is applied to. :meth:`rollout` continues from it.
        """
        frames = as_model_frames(frames, self.config)
        batch, n_frames = frames.shape[:2]
        if n_frames < 1:
            raise ValueError(f"frames: expected at least one context frame, got {n_frames}")
        expected = (batch, n_frames - 1, self.config.action_dim)
        if not isinstance(actions, Tensor) or tuple(actions.shape) != expected:
            raise ValueError(
                f"actions: expected the {n_frames - 1} actions between {n_frames} context frames, "
                f"shape {expected}, got {getattr(actions, 'shape', type(actions).__name__)}"
            )
        self.check_adapt(adapt, batch)
        codes, last_skips = self.encode_frames(frames, adapt)
        return self.context_from_codes(codes, actions, last_skips, adapt, generator=generator)

    def context_from_codes(
        self,
        codes: Tensor,
        actions: Tensor,
        skips: list[Tensor] | None = None,
        adapt: Adapt | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> WorldState:
        """:meth:`encode_context` of frames encoded beforehand (e.g. a dataset's, once).

        ``codes``: ``(B, P, g_dim)``, :meth:`encode` of the ``P`` context frames (with the same
        ``adapt``); ``actions``: ``(B, P - 1, A)``; ``skips``: the last frame's encoder features,
        needed only by a model with ``skips`` (for decoding).
        """
        if self.config.skips and not skips:
            raise ValueError("skips: expected the last context frame's encoder features for a "
                             "model with skips=true, got none")
        lstm, _, prior = self._context_steps(codes, actions, codes.shape[1] - 1, adapt, generator)
        return WorldState(lstm, codes[:, -1], list(skips or []), prior, observed=True)

    def expand(self, state: WorldState, n: int) -> WorldState:
        """``state`` with each row repeated for ``n`` candidates (:meth:`WorldState.expand`)."""
        return state.expand(n)

    def encode_frames(self, frames: Tensor, adapt: Adapt | None = None
                      ) -> tuple[Tensor, list[Tensor]]:
        """Codes ``(B, P, g_dim)`` of ``(B, P, C, S, S)`` frames in [0, 1] and the last frame's
        skips: what :meth:`context_from_codes` reads."""
        batch, n_frames = frames.shape[:2]
        codes, skips = self.encode(frames.flatten(0, 1), adapt)
        last_skips = [s.unflatten(0, (batch, n_frames))[:, -1] for s in skips]
        return codes.unflatten(0, (batch, n_frames)), last_skips

    def _context_steps(
        self,
        codes: Tensor,
        actions: Tensor,
        n_steps: int,
        adapt: Adapt | None,
        generator: torch.Generator | None,
    ) -> tuple[tuple[Tensor, Tensor], Tensor, tuple[Tensor, Tensor] | None]:
        """Teacher-forced predictor steps over the first ``n_steps`` of ``codes`` ``(B, P, g)``.

        Returns the LSTM state, the last step's predicted code (the first code when
        ``n_steps == 0``) and the prior LSTM state. SVG-LP's ``z_t`` comes from the posterior
        where frame ``t + 1`` is among ``codes``, from the prior otherwise.
        """
        batch, n_codes = codes.shape[:2]
        lstm = self.predictor.initial_state(batch, codes)
        prior = posterior = None
        if self.config.stochastic:
            prior = self.prior.initial_state(batch, codes)
            posterior = self.posterior.initial_state(batch, codes)
        code = codes[:, 0]
        for t in range(n_steps):
            z, prior = self._prior_sample(codes[:, t], prior, generator)
            if posterior is not None and t < n_codes - 1:
                mean, logvar, posterior = self.gaussian("posterior", codes[:, t + 1], posterior)
                noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                    dtype=mean.dtype)
                z = mean + noise * torch.exp(0.5 * logvar)
            out, lstm = self.step(codes[:, t], actions[:, t], lstm, z, adapt)
            code, lstm = self._carried(out.code, lstm)
        return lstm, code, prior

    def _prior_sample(
        self,
        code: Tensor,
        prior: tuple[Tensor, Tensor] | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
        """Draw ``z_t`` from the prior given frame ``t``'s code (``None`` if deterministic)."""
        if prior is None:
            return None, None
        mean, logvar, prior = self.gaussian("prior", code, prior)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + noise * torch.exp(0.5 * logvar), prior

    def _checked_unroll(self, state: WorldState, actions: Tensor, adapt: Adapt | None,
                        generator: torch.Generator | None, decode: bool
                        ) -> tuple[Rollout, WorldState]:
        """:meth:`_unroll` of every action of ``actions`` ``(B, H ≥ 1, A)``, after checking them
        and ``adapt`` against ``state``: the state verbs' common body."""
        batch = state.batch_size
        if (not isinstance(actions, Tensor) or actions.dim() != 3 or actions.shape[0] != batch
                or actions.shape[1] < 1 or actions.shape[2] != self.config.action_dim):
            raise ValueError(
                f"actions: expected shape ({batch}, H ≥ 1, {self.config.action_dim}) for a state "
                f"of batch {batch}, got {getattr(actions, 'shape', type(actions).__name__)}"
            )
        self.check_adapt(adapt, batch)
        return self._unroll(state, actions, actions.shape[1], adapt, generator, decode=decode)

    def imagine(self, state: WorldState, actions: Tensor, adapt: Adapt | None = None, *,
                generator: torch.Generator | None = None) -> Rollout:
        """Closed-loop rollout of ``actions`` ``(B, H, A)`` from ``state``.

        Frame ``k`` of the rollout is decoded from the state, re-encoded and stepped with action
        ``k``; no ground truth is used. Returns a :class:`Rollout` of ``H`` frames and rewards.
        """
        return self._checked_unroll(state, actions, adapt, generator, decode=True)[0]

    def rollout(
        self,
        state: WorldState,
        actions: Tensor,
        adapt: Adapt | None = None,
        *,
        decode: bool = False,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Predicted rewards ``(B, H)`` of action sequences ``(B, H, A)`` applied from ``state``.

        Reward ``k`` is that of action ``k`` in the ``k``-th frame from ``state`` (frame 0 being
        the observed one of :meth:`encode_context`). Differentiable in ``actions``. Frames are
        decoded only with ``decode=True`` (for videos): planners need rewards alone, and with
        ``feedback="latent"`` nothing is decoded at all then.
        """
        return self._checked_unroll(state, actions, adapt, generator, decode=decode)[0]

    def advance(self, state: WorldState, actions: Tensor, adapt: Adapt | None = None, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, WorldState]:
        """Apply ``actions`` ``(B, H, A)`` from ``state``: rewards ``(B, H)`` and the state after.

        The verb of an environment stepped inside the model: the returned state continues
        exactly where :meth:`rollout` of the same actions would (tested), with the predicted
        code of the frame the last action leads to (``observed=False``).
        """
        rollout, after = self._checked_unroll(state, actions, adapt, generator, decode=False)
        return rollout.rewards, after

    def _unroll(
        self,
        state: WorldState,
        actions: Tensor,
        n_frames: int,
        adapt: Adapt | None,
        generator: torch.Generator | None,
        decode: bool = True,
    ) -> tuple[Rollout, WorldState]:
        """Decode ``n_frames`` frames, stepping with the first ``len(actions)`` actions between
        (``decode=False``: no frames returned, and none decoded unless fed back as pixels); and
        the state after the last step."""
        lstm, code, prior = state.lstm, state.code, state.prior
        pixel_feedback = self.config.feedback == "pixels"
        n_steps = min(n_frames, actions.shape[1])
        n_frames = min(n_frames, n_steps + 1)
        codes, frames, rewards, hiddens, states = [code], [], [], [], []
        for k in range(n_steps):
            if pixel_feedback and (k > 0 or not state.observed):
                frame = self.decode(code, state.skips, adapt)
                frames.append(frame)
                code, _ = self.encode(frame, adapt)
            elif pixel_feedback and decode:
                frames.append(self.decode(code, state.skips, adapt))
            z, prior = self._prior_sample(code, prior, generator)
            out, lstm = self.step(code, actions[:, k], lstm, z, adapt)
            code = out.code
            codes.append(code)
            code, lstm = self._carried(code, lstm)
            rewards.append(out.reward)
            hiddens.append(out.hidden)
            if out.state_pred is not None:
                states.append(out.state_pred)
        stacked = None
        if decode and pixel_feedback:
            if n_frames > n_steps:
                frames.append(self.decode(code, state.skips, adapt))
            stacked = torch.stack(frames, dim=1)
        elif decode:
            # Nothing is fed back through pixels: decode every step in one batch.
            stacked = self._decode_steps(torch.stack(codes[:n_frames], dim=1), state.skips, adapt)
        if hiddens:
            hidden = torch.stack(hiddens, dim=1)
            reward = torch.stack(rewards, dim=1)
        else:
            hidden = code.new_zeros(code.shape[0], 0, self.config.rnn_size)
            reward = code.new_zeros(code.shape[0], 0)
        after = WorldState(lstm, code, state.skips, prior, observed=state.observed and n_steps == 0)
        return Rollout(stacked, reward, hidden,
                       torch.stack(states, dim=1) if states else None), after

    @contextlib.contextmanager
    def carry_detached(self) -> Iterator[None]:
        """Inside the block, the state carried from one predictor step to the next (code and
        LSTM state) is cut from the autograd graph: a gradient reaches a step's parameters only
        through that step's own outputs (its hidden activations, reward and predicted code),
        not through the steps after it; with pixel feedback the next step's decoding of the
        carried code counts as that next step's. Values are unchanged. A diagnostic: it splits a
        loss's gradient into the path through what each step emits and the path through the
        dynamics."""
        previous, self.detach_carry = self.detach_carry, True
        try:
            yield
        finally:
            self.detach_carry = previous

    def _carried(self, code: Tensor, lstm: tuple[Tensor, Tensor]
                 ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(code, lstm)`` as carried to the next step (detached inside :meth:`carry_detached`)."""
        if not self.detach_carry:
            return code, lstm
        return code.detach(), (lstm[0].detach(), lstm[1].detach())

    def _decode_steps(self, codes: Tensor, skips: list[Tensor], adapt: Adapt | None) -> Tensor:
        """Decode codes ``(B, H, g_dim)`` with one context frame's ``skips`` → ``(B, H, C, S, S)``.

        Per-example ``adapt`` entries are repeated over the ``H`` steps, which the conditional
        norms read as ``H`` rows per example.
        """
        steps = codes.shape[1]
        step_skips = [s.repeat_interleave(steps, dim=0) for s in skips]
        return self.decode(codes.flatten(0, 1), step_skips, adapt).unflatten(0, codes.shape[:2])

    def predict(self, frames: Tensor, actions: Tensor, n_future: int, adapt: Adapt | None = None,
                *, generator: torch.Generator | None = None) -> Tensor:
        """Predict ``n_future`` frames in closed loop after a context.

        ``frames``: ``(B, n_past, C, H, W)`` float in [0, 1]; ``actions``:
        ``(B, n_past + n_future - 1, A)``, action ``t`` applied to frame ``t`` (extra trailing
        actions are ignored). Returns ``(B, n_future, C, H, W)`` float in [0, 1].
        """
        if not isinstance(n_future, int) or n_future < 1:
            raise ValueError(f"n_future: expected a positive int, got {n_future!r}")
        n_past = frames.shape[1] if frames.dim() == 5 else 0
        self.check_inputs(frames, actions, n_past + n_future - 1)
        state = self.observe(frames, actions[:, :n_past], adapt, generator=generator)
        future_actions = actions[:, n_past : n_past + n_future - 1]
        return self._unroll(state, future_actions, n_future, adapt, generator)[0].frames

    def forward(self, frames: Tensor, actions: Tensor, n_past: int, teacher: Tensor | None = None,
                noise: Tensor | None = None, adapt: Adapt | None = None,
                reconstruct: bool = False) -> TrainOutput:
        """The training unroll over a window: predict frames ``1 … T-1`` from their predecessors.

        ``frames``: ``(B, T, C, H, W)`` in [0, 1]; ``actions``: ``(B, T, A)``. The input of step
        ``t < n_past`` is always the true frame ``t``; for ``t ≥ n_past`` it is the true frame
        where ``teacher[:, t]`` (bool ``(B, T)``) is true and the model's own prediction
        otherwise (``None`` = pure teacher forcing, all false = closed loop). Skip features come
        from frame ``min(t, n_past - 1)``. ``noise``: ``(B, T - 1, z_dim)`` standard normal
        draws for SVG-LP's posterior samples (required when stochastic). ``reconstruct``: also
        decode every frame from its own code with the skip features zeroed, so that an
        autoencoding loss on them can only be met through the code (``train.recon_weight``).
        """
        self.check_inputs(frames, actions, frames.shape[1])
        batch, length = frames.shape[:2]
        self.check_adapt(adapt, batch)
        if not 1 <= n_past < length:
            raise ValueError(f"n_past: expected 1 ≤ n_past < window length {length}, got {n_past}")
        self._check_noise(noise, batch, length)
        codes, skips = self.encode(frames.flatten(0, 1), adapt)
        codes = codes.unflatten(0, (batch, length))
        reconstructions = (
            self.decode(codes.flatten(0, 1), [torch.zeros_like(s) for s in skips], adapt)
            .unflatten(0, (batch, length))
            if reconstruct
            else None
        )
        skips = [s.unflatten(0, (batch, length)) for s in skips]
        unrolled = self.unroll_codes(codes, actions, n_past, teacher, noise, adapt, skips)
        predicted = unrolled.frames
        if predicted is None:
            # No frame was fed back through pixels: decode all steps in one batch.
            source = torch.arange(length - 1, device=frames.device).clamp(max=n_past - 1)
            step_skips = [s[:, source].flatten(0, 1) for s in skips]
            predicted = self.decode(unrolled.codes.flatten(0, 1), step_skips, adapt).unflatten(
                0, (batch, length - 1)
            )
        return TrainOutput(
            frames=predicted,
            rewards=unrolled.rewards,
            states=unrolled.states,
            kl=unrolled.kl,
            reconstructions=reconstructions,
            codes=codes,
            predicted_codes=unrolled.codes,
        )

    def _check_noise(self, noise: Tensor | None, batch: int, length: int) -> None:
        expected = (batch, length - 1, self.config.z_dim)
        if self.config.stochastic and (noise is None or noise.shape != expected):
            raise ValueError(f"noise: expected shape {expected} for SVG-LP, got "
                             f"{None if noise is None else tuple(noise.shape)}")

    def unroll_codes(self, codes: Tensor, actions: Tensor, n_past: int,
                     teacher: Tensor | None = None, noise: Tensor | None = None,
                     adapt: Adapt | None = None, skips: list[Tensor] | None = None, *,
                     closed_loop: bool = False) -> CodeUnroll:
        """The predictor over a window's codes ``(B, T, g_dim)``; step ``t`` predicts code ``t+1``.

        ``actions``: ``(B, T, A)``. The input of step ``t < n_past`` is code ``t``; for
        ``t ≥ n_past`` it is code ``t`` where ``teacher[:, t]`` (bool ``(B, T)``) is true and the
        model's own prediction otherwise (``None`` = pure teacher forcing, all false = closed
        loop). ``closed_loop=True`` (``teacher`` then ``None``) feeds every prediction after the
        context straight back, with no teacher mask in the graph (the dynamics phase). With
        ``model.feedback="pixels"`` a prediction is fed back as the encoding of its
        decoded frame, decoded with ``skips`` (the window's skip features, each ``(B, T, …)``) of
        frame ``min(t, n_past - 1)``; those frames are returned. ``noise``: ``(B, T - 1, z_dim)``
        standard normal draws for SVG-LP's posterior samples. The unroll of both the joint
        training steps (:meth:`forward`) and the dynamics phase, which trains on cached codes.
        """
        batch, length = codes.shape[:2]
        stochastic = self.config.stochastic
        self._check_noise(noise, batch, length)
        if closed_loop and teacher is not None:
            raise ValueError("teacher: closed_loop=True feeds every prediction back, expected no "
                             f"teacher mask, got one of shape {tuple(teacher.shape)}")
        mixed = teacher is not None and not bool(teacher[:, n_past : length - 1].all())
        fed_back = closed_loop or mixed
        pixel_feedback = fed_back and self.config.feedback == "pixels"
        if pixel_feedback and skips is None:
            raise ValueError("skips: pixel feedback decodes the predictions, expected the "
                             "window's skip features, got None")
        lstm = self.predictor.initial_state(batch, codes)
        if stochastic:
            prior = self.prior.initial_state(batch, codes)
            posterior = self.posterior.initial_state(batch, codes)
            kl = codes.new_zeros(batch)
        outputs: list[StepOutput] = []
        decoded: list[Tensor] = []
        for t in range(length - 1):
            code_in = codes[:, t]
            if fed_back and t >= n_past:
                predicted_code = (
                    self.encode(decoded[-1], adapt)[0] if pixel_feedback else outputs[-1].code
                )
                code_in = (predicted_code if closed_loop
                           else torch.where(teacher[:, t, None], code_in, predicted_code))
            z = None
            if stochastic:
                mean_q, logvar_q, posterior = self.gaussian("posterior", codes[:, t + 1], posterior)
                mean_p, logvar_p, prior = self.gaussian("prior", code_in, prior)
                z = mean_q + noise[:, t] * torch.exp(0.5 * logvar_q)
                kl = kl + 0.5 * (
                    logvar_p - logvar_q
                    + (logvar_q.exp() + (mean_q - mean_p) ** 2) / logvar_p.exp()
                    - 1.0
                ).sum(-1)
            out, lstm = self.step(code_in, actions[:, t], lstm, z, adapt)
            outputs.append(out)
            if pixel_feedback:
                skip_t = [s[:, min(t, n_past - 1)] for s in skips]
                decoded.append(self.decode(out.code, skip_t, adapt))
        return CodeUnroll(
            codes=torch.stack([o.code for o in outputs], dim=1),
            rewards=torch.stack([o.reward for o in outputs], dim=1),
            states=(torch.stack([o.state_pred for o in outputs], dim=1)
                    if self.config.state_head else None),
            frames=torch.stack(decoded, dim=1) if pixel_feedback else None,
            kl=kl if stochastic else codes.new_zeros(batch),
        )

    def config_dict(self) -> dict[str, object]:
        """The architecture as a plain dict (what checkpoints store)."""
        return asdict(self.config)


VERBS = ("observe", "imagine", "predict", "encode", "decode", "step", "forward")


class _Verb(nn.Module):
    """Exposes one verb of a model as ``forward`` so ``functional_call`` can run it."""

    def __init__(self, model: SVGWorldModel, verb: str) -> None:
        super().__init__()
        self.model = model
        self.verb = verb

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.verb)(*args, **kwargs)


def functional_verb(
    model: SVGWorldModel,
    params: dict[str, Tensor],
    verb: str,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Run ``model.<verb>(*args, **kwargs)`` with ``params`` in place of its parameters.

    ``params`` maps parameter names (as in ``model.named_parameters()``; a subset is fine) to
    tensors, e.g. per-example adapted or meta-learned copies. A thin wrapper over
    :func:`torch.func.functional_call`, so ``torch.func.grad``/``vmap`` compose with it and the
    module's own weights are never modified.
    """
    if verb not in VERBS:
        raise ValueError(f"verb: expected one of {VERBS}, got {verb!r}")
    wrapper = _Verb(model, verb)
    prefixed = {f"model.{name}": value for name, value in params.items()}
    return torch.func.functional_call(wrapper, prefixed, args, kwargs, strict=False)
