"""Settings of Noether tailoring and meta-training (the ``noether`` config group)."""

from __future__ import annotations

from dataclasses import dataclass, field

from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.losses import CONSERVATION_MODES
from noether_control.noether.tailoring import TailoringConfig, validate_inner_loop
from noether_control.runtime import require_at_least, require_choice

#: What the inner loop adapts per example (see :mod:`noether_control.noether.meta`).
TAILORED = ("lstm", "norm", "all")


@dataclass
class NoetherConfig:
    """Noether tailoring and meta-training (group ``noether``; ``enabled: false`` = baseline)."""

    enabled: bool = False
    """Meta-train with tailoring after ``pretrain_steps`` (Algorithm 1); false: plain SVG."""
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    """The conserved embedding g_φ."""
    tailored: str = "lstm"
    """Per-example parameters adapted by the inner loop: ``lstm``, ``norm`` or ``all``."""
    loss: str = "consecutive"
    """Conservation loss: ``first`` (Eq. 2a), ``consecutive`` (Eq. 2b) or ``both``."""
    include_context: bool = False
    """Also conserve g across the true context frames (``frames`` embedding only: the context
    has no LSTM activations or predicted states of its own)."""
    scale_free: bool = False
    """Divide the conservation loss by g_φ's total variance (over examples and steps), so that
    g cannot lower its loss, or switch tailoring off, by shrinking towards a constant: the
    current batch's variance while meta-training (the one quantity through which the examples
    of a batch meet), a running average of it (kept with the checkpoint) at test time, where
    each example is tailored alone."""
    embedding_lr_scale: float = 1.0
    """g_φ's (and the learned inner lr's) outer learning rate as a multiple of the model's
    (``train.lr`` and its schedule): their own Adam parameter group, so g_φ, which starts from
    scratch when meta-training starts, can learn faster than the pre-trained model moves."""
    model_second_order: bool = True
    """Let the second-order meta-gradient (through the inner step) reach the model's weights.
    False: the inner step sees the model's weights as constants, so they are trained by the
    outer loss at the tailored parameters alone (first order), while g_φ and the inner lr still
    learn through the inner step (their only path). With a frame-pair g_φ the path through the
    inner step dominates the model's meta-gradient and points against the prediction's own
    gradient (docs/noether.md). ``tailored=lstm`` or ``norm`` only: with ``all`` the tailored
    parameters are the weights themselves."""
    inner: TailoringConfig = field(
        default_factory=lambda: TailoringConfig(steps=1, lr=1.0, learnable_lr=True))
    """The inner loop at training time (steps K, lr, sgd/adam, second order, learnable lr)."""
    test_inner_steps: int | None = None
    """Inner steps at test time; ``None``: the same as ``inner.steps``."""
    pretrain_steps: int = 0
    """E₁ in optimiser steps: plain SVG training before meta-training starts."""
    init_from: str | None = None
    """A baseline checkpoint to start from (its weights, Adam state and step), instead of
    pre-training here; so Noether and the more-steps control share the same E₁ model."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid value."""
        self.embedding.validate()
        require_choice("noether.tailored", self.tailored, TAILORED)
        require_choice("noether.loss", self.loss, CONSERVATION_MODES)
        if self.include_context and self.embedding.input != "frames":
            raise ValueError(
                "noether.include_context: expected embedding.input=frames (the context has no "
                f"predicted activations or states), got embedding.input={self.embedding.input!r}"
            )
        if not self.model_second_order and self.tailored == "all":
            raise ValueError("noether.model_second_order=false: expected tailored=lstm or norm "
                             "(with tailored=all the tailored parameters are the model's own "
                             "weights), got tailored='all'")
        require_at_least("noether.test_inner_steps", self.test_inner_steps, 0, integer=True,
                         optional=True)
        require_at_least("noether.pretrain_steps", self.pretrain_steps, 0, integer=True)
        if not self.embedding_lr_scale > 0 or self.embedding_lr_scale == float("inf"):
            raise ValueError(f"noether.embedding_lr_scale: expected a finite number > 0, got "
                             f"{self.embedding_lr_scale!r}")
        validate_inner_loop(self.inner.steps, self.inner.lr, self.inner.optimizer)

    def test_steps(self, override: int | None = None) -> int:
        """Inner steps K at test time: ``override`` when given, else ``test_inner_steps``, else
        the training K (``inner.steps``)."""
        if override is not None:
            return override
        return self.inner.steps if self.test_inner_steps is None else self.test_inner_steps

    def min_horizon(self, n_past: int) -> int:
        """Fewest predicted frames along which g_φ has the 2 values a conservation loss needs:
        one value per predicted step after the first (``hidden``, ``state``) or per pair of
        consecutive frames, the true context's included with ``include_context``."""
        if self.embedding.input == "frames" and self.include_context:
            return max(1, 3 - n_past)
        return 3
