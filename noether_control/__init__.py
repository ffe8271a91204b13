"""noether-control: model-based control with Noether Networks.

Importing the package registers the pixel pendulum environments with Gymnasium
(``NoetherControl/PixelPendulum-v0`` and friends).
"""

from importlib.metadata import PackageNotFoundError, version

from noether_control import envs as envs  # registers the Gymnasium ids

try:
    __version__ = version("noether-control")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "envs"]
