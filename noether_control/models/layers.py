"""Building blocks of the SVG world model, written for per-example adaptation.

Every normalisation layer is a :class:`ConditionalGroupNorm`: a group norm whose output is
scaled and shifted by per-example ``(γ, β)`` looked up by the layer's key in an ``adapt`` dict
(identity when absent). Group norm rather than batch norm because its statistics are per
example: an example's prediction never depends on the rest of its batch, which is what
per-example tailoring, ``torch.func.vmap`` and the DDP equivalence (same parameters from one
process or several) all need, and there are no running buffers to update in a functional call.

The LSTM is written out with :class:`torch.nn.Linear` layers instead of :class:`torch.nn.LSTMCell`
so that double-backward works on every device (the fused CUDA cell has no second derivative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Per-example adaptable inputs: ``"<key>.gamma"`` / ``"<key>.beta"`` of shape ``(B, C)``.
Adapt = Mapping[str, Tensor]


def _groups(channels: int) -> int:
    """Largest group count ≤ 8 dividing ``channels`` (8 groups is a good default for small nets)."""
    return math.gcd(channels, 8)


class ConditionalGroupNorm(nn.Module):
    """Group norm with a learned affine, then an optional per-example ``(γ, β)``.

    ``y = γ_b · (GN(x) · w + b) + β_b`` with ``γ_b, β_b`` of shape ``(B, C)`` read from
    ``adapt[f"{key}.gamma"]`` and ``adapt[f"{key}.beta"]``; a missing entry means ``γ = 1`` or
    ``β = 0``, so an un-adapted model is the plain network.
    """

    def __init__(self, channels: int, key: str) -> None:
        super().__init__()
        self.channels = channels
        self.key = key
        self.norm = nn.GroupNorm(_groups(channels), channels)

    def forward(self, x: Tensor, adapt: Adapt | None = None) -> Tensor:
        """``x``: ``(B·k, C, ...)`` float → same shape.

        ``x`` may hold ``k`` rows per example (frames of a sequence flattened batch-first,
        ``(B, T) → B·T``): example ``b``'s ``(γ, β)`` applies to rows ``b·k … b·k + k - 1``.
        """
        y = self.norm(x)
        if not adapt:
            return y
        gamma = adapt.get(f"{self.key}.gamma")
        beta = adapt.get(f"{self.key}.beta")
        if gamma is None and beta is None:
            return y
        examples = (gamma if gamma is not None else beta).shape[0]  # type: ignore[union-attr]
        if x.shape[0] % examples:
            raise ValueError(
                f"adapt[{self.key!r}]: expected a batch dividing {x.shape[0]}, got {examples}"
            )
        grouped = y.unflatten(0, (examples, x.shape[0] // examples))
        view = (examples, 1, self.channels) + (1,) * (x.dim() - 2)
        if gamma is not None:
            grouped = grouped * gamma.reshape(view)
        if beta is not None:
            grouped = grouped + beta.reshape(view)
        return grouped.flatten(0, 1)


class ConvBlock(nn.Module):
    """Convolution (or transposed convolution) → conditional group norm → activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key: str,
        *,
        kernel: int,
        stride: int,
        padding: int,
        transpose: bool = False,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        conv_type = nn.ConvTranspose2d if transpose else nn.Conv2d
        # No bias: the norm removes (most of) it and the norm's own shift replaces it; its
        # near-zero gradient would only feed Adam noise.
        self.conv = conv_type(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.norm = ConditionalGroupNorm(out_channels, key)
        self.activation = activation

    def forward(self, x: Tensor, adapt: Adapt | None = None) -> Tensor:
        """``x``: ``(B, C_in, H, W)`` → ``(B, C_out, H', W')``."""
        y = self.norm(self.conv(x), adapt)
        if self.activation == "tanh":
            return torch.tanh(y)
        return F.leaky_relu(y, 0.2)


class LSTMStack(nn.Module):
    """A stack of LSTM cells between an input and an output linear layer (SVG's ``lstm``).

    State is a tuple ``(h, c)`` of tensors ``(layers, B, hidden)``; :meth:`forward` runs one
    time step and returns the top layer's hidden output ``(B, hidden)`` and the new state.
    """

    def __init__(self, input_size: int, hidden_size: int, layers: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.layers = layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.cells = nn.ModuleList(
            nn.Linear(2 * hidden_size, 4 * hidden_size) for _ in range(layers)
        )

    def initial_state(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Zero state ``(h, c)``, each ``(layers, B, hidden)``, on ``like``'s device/dtype."""
        zeros = like.new_zeros(self.layers, batch, self.hidden_size)
        return zeros, zeros

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x``: ``(B, input_size)`` → top hidden ``(B, hidden)``, new state."""
        h_prev, c_prev = state
        inp = self.embed(x)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            gates = cell(torch.cat([inp, h_prev[layer]], dim=-1))
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c_prev[layer] + torch.sigmoid(i) * torch.tanh(g)
            inp = torch.sigmoid(o) * torch.tanh(c)
            hs.append(inp)
            cs.append(c)
        return inp, (torch.stack(hs), torch.stack(cs))


CODE_HEADS = ("keypoints", "conv")


class KeypointHead(nn.Module):
    """Spatial soft-argmax keypoints (Levine et al. 2016) mapped to a frame code.

    A 1×1 convolution makes ``keypoints`` heat maps; each is a softmax over positions (learned
    temperature) whose expected ``(x, y)`` in ``[-1, 1]`` is one keypoint; a linear layer and
    ``tanh`` map the ``2·keypoints`` coordinates to the code. Why: with a global convolutional
    head the code starts blind to where the rod is, the decoder settles on the mean frame and the
    pair can sit on that plateau for hundreds of steps; even random filters respond to the rod, so
    a soft-argmax code locates it from the first step and the autoencoder leaves the plateau in
    tens of steps (docs/world_model.md has the measurements).
    """

    def __init__(self, in_channels: int, keypoints: int, g_dim: int) -> None:
        super().__init__()
        self.heatmaps = nn.Conv2d(in_channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.out = nn.Linear(2 * keypoints, g_dim)

    def locate(self, features: Tensor) -> Tensor:
        """``features``: ``(B, C, H, W)`` → keypoints ``(B, keypoints, 2)``, ``(x, y)`` in [-1, 1].

        ``x`` runs along the width (left to right), ``y`` along the height (top to bottom).
        """
        heat = self.heatmaps(features)
        height, width = heat.shape[-2:]
        weights = torch.softmax(heat.flatten(2) * self.log_temperature.exp(), dim=-1)
        weights = weights.unflatten(-1, (height, width))
        ys = torch.linspace(-1.0, 1.0, height, device=heat.device, dtype=heat.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=heat.device, dtype=heat.dtype)
        expected_x = (weights.sum(-2) * xs).sum(-1)
        expected_y = (weights.sum(-1) * ys).sum(-1)
        return torch.stack([expected_x, expected_y], dim=-1)

    def forward(self, features: Tensor) -> Tensor:
        """``features``: ``(B, C, H, W)`` → code ``(B, g_dim)`` in ``(-1, 1)``."""
        return torch.tanh(self.out(self.locate(features).flatten(1)))


class FrameEncoder(nn.Module):
    """Convolutional frame encoder (DCGAN or VGG style) returning the code and skip features.

    ``image_size`` must be a power of two ≥ 32; the number of stride-2 stages is
    ``log2(image_size) - 2`` (4 at 64 px, 5 at 128 px), ending at 4×4 (the keypoint head
    without ``skips`` stops at the 16×16 stage it reads). The code (``g_dim``, in
    ``(-1, 1)``) comes from ``code_head``: ``"keypoints"`` (default) reads ``keypoints``
    soft-argmax keypoints off the 16×16 stage (:class:`KeypointHead`); ``"conv"`` is SVG's
    final 4×4 convolution of the 4×4 stage, squashed by ``tanh``.
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        image_size: int,
        width: int,
        g_dim: int,
        code_head: str = "keypoints",
        keypoints: int = 16,
        skips: bool = True,
    ) -> None:
        super().__init__()
        if code_head not in CODE_HEADS:
            raise ValueError(f"code_head: expected one of {CODE_HEADS}, got {code_head!r}")
        # DCGAN stage i outputs image_size / 2^(i+1) pixels, a VGG stage (before pooling) / 2^i.
        self.keypoint_stage = int(math.log2(image_size)) - (5 if kind == "dcgan" else 4)
        stages = int(math.log2(image_size)) - 2
        if code_head == "keypoints" and not skips:
            # Nothing reads the coarser stages: neither the code nor (absent) skip connections.
            stages = self.keypoint_stage + 1
        widths = [min(width * 2**i, 8 * width) for i in range(stages)]
        self.kind = kind
        self.code_head = code_head
        self.skips = skips
        self.stages = nn.ModuleList()
        in_ch = channels
        for index, out_ch in enumerate(widths):
            key = f"encoder.{index}"
            if kind == "dcgan":
                stage = nn.ModuleList(
                    [ConvBlock(in_ch, out_ch, f"{key}.0", kernel=4, stride=2, padding=1)]
                )
            else:
                # VGG stages keep resolution with 3×3 convolutions and halve it with max pooling.
                stage = nn.ModuleList(
                    [
                        ConvBlock(in_ch, out_ch, f"{key}.0", kernel=3, stride=1, padding=1),
                        ConvBlock(out_ch, out_ch, f"{key}.1", kernel=3, stride=1, padding=1),
                    ]
                )
            self.stages.append(stage)
            in_ch = out_ch
        self.widths = widths
        self.head: nn.Module
        if code_head == "keypoints":
            self.head = KeypointHead(widths[self.keypoint_stage], keypoints, g_dim)
        else:
            self.head = ConvBlock(
                in_ch, g_dim, "encoder.head", kernel=4, stride=1, padding=0, activation="tanh"
            )

    def forward(self, x: Tensor, adapt: Adapt | None = None) -> tuple[Tensor, list[Tensor]]:
        """``x``: ``(B, C, H, W)`` in ``[0, 1]`` → code ``(B, g_dim)``, skips (fine to coarse;
        an empty list without ``skips``, so that nothing downstream carries them)."""
        skips = []
        h = x
        for stage in self.stages:
            for block in stage:
                h = block(h, adapt)
            skips.append(h)
            if self.kind == "vgg":
                h = F.max_pool2d(h, 2)
        code = (
            self.head(skips[self.keypoint_stage])
            if self.code_head == "keypoints"
            else self.head(h, adapt).flatten(1)
        )
        return code, skips if self.skips else []


class FrameDecoder(nn.Module):
    """Mirror of :class:`FrameEncoder`; with ``skips`` every stage concatenates the matching
    skip feature, without them the frame is decoded from the code alone (the skip list is then
    ignored)."""

    def __init__(
        self, kind: str, channels: int, image_size: int, width: int, g_dim: int, skips: bool = True
    ) -> None:
        super().__init__()
        self.skips = skips
        stages = int(math.log2(image_size)) - 2
        widths = [min(width * 2**i, 8 * width) for i in range(stages)]
        self.kind = kind
        top = widths[-1]
        self.head = ConvBlock(
            g_dim, top, "decoder.head", kernel=4, stride=1, padding=0, transpose=True
        )
        self.stages = nn.ModuleList()
        # Stage i (coarse to fine) takes [previous, skip_i] and outputs the next finer width.
        for rank, index in enumerate(reversed(range(stages))):
            in_ch = (2 if skips else 1) * widths[index]
            last = index == 0
            out_ch = widths[index - 1] if not last else width
            key = f"decoder.{rank}"
            if kind == "dcgan":
                if last:
                    stage = nn.ModuleList(
                        [nn.ConvTranspose2d(in_ch, channels, 4, 2, 1)]
                    )
                else:
                    stage = nn.ModuleList(
                        [
                            ConvBlock(
                                in_ch, out_ch, f"{key}.0", kernel=4, stride=2, padding=1,
                                transpose=True,
                            )
                        ]
                    )
            else:
                blocks: list[nn.Module] = [
                    ConvBlock(in_ch, widths[index], f"{key}.0", kernel=3, stride=1, padding=1)
                ]
                if last:
                    blocks.append(nn.Conv2d(widths[index], channels, 3, 1, 1))
                else:
                    blocks.append(
                        ConvBlock(widths[index], out_ch, f"{key}.1", kernel=3, stride=1, padding=1)
                    )
                stage = nn.ModuleList(blocks)
            self.stages.append(stage)

    def forward(self, code: Tensor, skips: list[Tensor], adapt: Adapt | None = None) -> Tensor:
        """``code``: ``(B, g_dim)``, encoder ``skips`` → frame ``(B, C, H, W)`` in [0, 1]."""
        h = self.head(code[:, :, None, None], adapt)
        for rank, stage in enumerate(self.stages):
            if self.kind == "vgg":
                # VGG skips are taken before pooling, so upsample first to their resolution.
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            if self.skips:
                h = torch.cat([h, skips[len(self.stages) - 1 - rank]], dim=1)
            for block in stage:
                h = block(h, adapt) if isinstance(block, ConvBlock) else block(h)
        return torch.sigmoid(h)


def norm_layers(module: nn.Module) -> list[ConditionalGroupNorm]:
    """All conditional norm layers of ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, ConditionalGroupNorm)]
