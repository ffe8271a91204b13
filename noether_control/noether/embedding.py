"""The conserved-quantity embedding g_φ of Noether Networks (Alet et al. 2021).

g_φ maps a sequence to one ``k``-dimensional vector per step; the conservation losses of
:mod:`noether_control.noether.losses` ask these vectors to stay constant along a rollout. Three
inputs are supported (``EmbeddingConfig.input``):

``hidden`` (default)
    The (modulated) top LSTM activations of the frame predictor, ``(B, T, rnn_size)``, through an
    MLP. Cheap, and the quantity the pendulum experiment of the paper tailored through.
``frames``
    Two consecutive frames stacked on channels, ``(B, T, C, H, W) -> (B, T - 1, k)``, through the
    paper's video network: conv5×5(2C→w)-ReLU-pool-conv5×5(w→2w)-ReLU-pool-linear→k. A pair
    sees velocity, which one frame cannot.
``state``
    Low-dimensional states ``(B, T, state_dim)`` (e.g. the world model's state head), via an MLP.

A controlled system conserves nothing by itself: the torque does work. With
``EmbeddingConfig.action_work`` (``frames`` only) g_φ returns its pair value minus the learned
work of the actions since the first pair, ``c_t = q_t − Σ_{1≤s≤t} a_s · U_φ(q_s)``, the form of
the energy balance ``E_t − E_0 = Σ τ_s Δθ_s``: the work is linear in the action and read from
the value of the pair over which the action acts (``q_s`` of ``(x_s, x_{s+1})``, which sees the
velocity), so with zero torque ``q`` itself is what is conserved. ``U_φ`` is linear in ``q_s``
rather than in the conv features: on ``k`` inputs, not thousands, an outer Adam step from its
zero start moves the work by a small amount instead of swamping ``q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

EMBEDDING_INPUTS = ("hidden", "frames", "state")


@dataclass
class EmbeddingConfig:
    """Architecture of :class:`ConservedEmbedding` (group ``noether``, key ``embedding``)."""

    input: str = "hidden"
    """What g_φ reads: ``hidden`` (LSTM activations), ``frames`` (pairs) or ``state``."""
    dim: int = 16
    """Output size k of the embedding."""
    width: int = 64
    """Hidden units of the MLPs (``hidden``/``state``); first conv channels (``frames``, the
    second conv has twice as many)."""
    action_work: bool = False
    """``frames`` only: subtract the learned work of the actions, so that g_φ is conserved in
    the balance sense a driven system allows (module docstring). Its head starts at zero, so a
    fresh embedding equals the action-blind one."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that cannot build an embedding."""
        if self.input not in EMBEDDING_INPUTS:
            raise ValueError(
                f"noether.embedding.input: expected one of {EMBEDDING_INPUTS}, got {self.input!r}"
            )
        if self.action_work and self.input != "frames":
            raise ValueError(
                "noether.embedding.action_work: expected input=frames (the work is read from the "
                f"frame pair an action acts over), got input={self.input!r}"
            )
        for name in ("dim", "width"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"noether.embedding.{name}: expected a positive integer, got "
                    f"{getattr(self, name)}"
                )


class ConservedEmbedding(nn.Module):
    """g_φ: a sequence ``(B, T, ...)`` → embeddings ``(B, T', k)``, every step independently.

    Args:
        config: which input and how large.
        channels, image_size: frame layout (``frames`` input).
        hidden_size: LSTM units of the world model (``hidden`` input).
        state_dim: state size (``state`` input).
        action_dim: action size A (``action_work``).

    Examples are independent (no batch statistics), as per-example tailoring requires.
    """

    def __init__(
        self,
        config: EmbeddingConfig,
        *,
        channels: int = 3,
        image_size: int = 64,
        hidden_size: int = 128,
        state_dim: int = 0,
        action_dim: int = 1,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        width, dim = config.width, config.dim
        if config.input == "frames":
            if image_size % 4 or image_size < 8:
                raise ValueError(
                    f"frames embedding: expected an image size divisible by 4 and >= 8, got "
                    f"{image_size}"
                )
            self.expected = (2 * channels, image_size, image_size)
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(2 * channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, dim),
            )
            if config.action_work:
                if action_dim < 1:
                    raise ValueError(f"action_work embedding: expected action_dim >= 1, got "
                                     f"{action_dim}")
                self.action_dim = action_dim
                self.work = nn.Linear(dim, dim * action_dim)
                nn.init.zeros_(self.work.weight)
                nn.init.zeros_(self.work.bias)
        else:
            size = hidden_size if config.input == "hidden" else state_dim
            if size < 1:
                raise ValueError(
                    f"{config.input} embedding: expected an input size >= 1, got {size} "
                    + ("(the world model needs state_head=true and a state_dim)"
                       if config.input == "state" else "")
                )
            self.expected = (size,)
            self.net = nn.Sequential(
                nn.Linear(size, width), nn.ELU(), nn.Linear(width, width), nn.ELU(),
                nn.Linear(width, dim),
            )

    @property
    def steps_lost(self) -> int:
        """How many fewer embeddings than input steps (1 for frame pairs, else 0)."""
        return 1 if self.config.input == "frames" else 0

    def forward(self, sequence: Tensor, actions: Tensor | None = None) -> Tensor:
        """Embed every step of ``sequence``.

        Args:
            sequence: float ``(B, T, *features)``: frames ``(B, T, C, H, W)`` in [0, 1] (pairs
                ``(t-1, t)`` are formed here, T ≥ 2), LSTM activations ``(B, T, rnn_size)`` or
                states ``(B, T, state_dim)``.
            actions: ``action_work`` only (required there): float ``(B, ≥ T - 1, A)``, action
                ``t`` applied to frame ``t`` of ``sequence``.

        Returns:
            Float ``(B, T - steps_lost, k)``.
        """
        if not isinstance(sequence, Tensor):
            raise TypeError(f"sequence: expected a tensor, got {type(sequence).__name__}")
        if self.config.input == "frames":
            if sequence.dim() != 5 or sequence.shape[1] < 2:
                raise ValueError(
                    f"frames embedding: expected (B, T >= 2, C, H, W), got {tuple(sequence.shape)}"
                )
            sequence = torch.cat([sequence[:, :-1], sequence[:, 1:]], dim=2)
        if sequence.dim() < 3 or tuple(sequence.shape[2:]) != self.expected:
            layout = ", ".join(map(str, self.expected))
            raise ValueError(
                f"{self.config.input} embedding: expected (B, T, {layout}), "
                f"got {tuple(sequence.shape)}"
            )
        batch, steps = sequence.shape[:2]
        values = self.net(sequence.flatten(0, 1)).unflatten(0, (batch, steps))
        if not self.config.action_work:
            return values
        work = self.work(values).unflatten(-1, (-1, self.action_dim))
        return values - self._accumulated_work(work, actions, steps)

    def _accumulated_work(self, work: Tensor, actions: Tensor | None, pairs: int) -> Tensor:
        """``Σ_{1≤s≤t} a_s · U_s`` for every pair ``t`` (0 at the first pair), ``(B, pairs, k)``,
        from the per-pair work rates ``work`` ``(B, pairs, k, A)``."""
        if actions is None:
            raise ValueError("action_work embedding: expected the actions applied to the frames, "
                             "got none")
        if (actions.dim() != 3 or actions.shape[0] != work.shape[0] or actions.shape[1] < pairs
                or actions.shape[2] != self.action_dim):
            raise ValueError(
                f"action_work embedding: expected actions (B={work.shape[0]}, >= {pairs}, "
                f"A={self.action_dim}), got {tuple(actions.shape)}"
            )
        # Pair s = (x_s, x_{s+1}) is the motion that action s drives.
        done = torch.einsum("btka,bta->btk", work[:, 1:], actions[:, 1:pairs].to(work.dtype))
        return torch.cat([torch.zeros_like(done[:, :1]), done], 1).cumsum(1)
