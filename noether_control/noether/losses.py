"""Conservation losses of Noether Networks (Alet et al. 2021, Eq. 2), one value per example.

Given embeddings ``e = g_φ(x)`` of shape ``(B, T, k)`` along a sequence:

* ``first`` (Eq. 2a): mean over ``t ≥ 1`` of ``‖e_t − e_0‖²`` — every step against the first;
* ``consecutive`` (Eq. 2b, the paper's video setting): mean over ``t ≥ 1`` of
  ``‖e_t − e_{t−1}‖²``;
* ``both``: their sum.

The paper sums over steps; we average, so the inner learning rate does not depend on the
horizon. Each example's loss depends only on its own row, as per-example tailoring requires.
"""

from __future__ import annotations

from torch import Tensor

CONSERVATION_MODES = ("first", "consecutive", "both")


def conservation_loss(embeddings: Tensor, mode: str = "consecutive") -> Tensor:
    """Per-example conservation loss of ``embeddings``.

    Args:
        embeddings: float ``(B, T, k)``, T ≥ 2 (step 0 is the reference of ``first``).
        mode: ``first`` (Eq. 2a), ``consecutive`` (Eq. 2b) or ``both``.

    Returns:
        Float ``(B,)``, ≥ 0; zero exactly when the embedding is constant along the sequence.
    """
    if mode not in CONSERVATION_MODES:
        raise ValueError(f"conservation mode: expected one of {CONSERVATION_MODES}, got {mode!r}")
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 3 or embeddings.shape[1] < 2:
        raise ValueError(
            "embeddings: expected a tensor (B, T >= 2, k), got "
            f"{tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings)}"
        )
    loss = embeddings.new_zeros(embeddings.shape[0])
    if mode in ("first", "both"):
        loss = loss + ((embeddings[:, 1:] - embeddings[:, :1]) ** 2).sum(-1).mean(-1)
    if mode in ("consecutive", "both"):
        loss = loss + ((embeddings[:, 1:] - embeddings[:, :-1]) ** 2).sum(-1).mean(-1)
    return loss
