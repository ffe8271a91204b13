"""Episode datasets: writing Minari datasets and serving training windows from them.

``noether-control collect`` (batched rollouts of a policy → Minari) lives with the policies, in
:mod:`noether_control.agents.collect`.

- :mod:`~noether_control.data.minari_io`: atomic Minari HDF5 writing, safe opening.
- :mod:`~noether_control.data.windows`: :class:`EpisodeWindows`, the torch ``Dataset`` of
  fixed-length windows, and the deterministic episode split.
- :mod:`~noether_control.data.env_config`: the ``env`` config group and vector env building.

See ``docs/datasets.md``.
"""

from noether_control.data.env_config import EnvConfig, env_spec, make_vector_env
from noether_control.data.minari_io import DatasetError, DatasetExistsError, dataset_path
from noether_control.data.windows import EpisodeWindows, split_episodes

__all__ = [
    "DatasetError",
    "DatasetExistsError",
    "EnvConfig",
    "EpisodeWindows",
    "dataset_path",
    "env_spec",
    "make_vector_env",
    "split_episodes",
]
