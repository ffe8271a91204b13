"""Validated configurations and batched systems behind the single and vector environments.

A *system* bundles everything an environment needs about one physical system, batched over
``N`` environments: its spaces, the reset distribution (drawn from a given generator), the pure
dynamics, reward and energy functions of :mod:`noether_control.envs.dynamics`, and the renderer.
The single environment is the vector environment's logic at ``N = 1``, which is what makes their
outputs identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import utils
from numpy.typing import NDArray

from noether_control.envs import dynamics
from noether_control.envs.rendering import (
    DOUBLE_PENDULUM_STYLE,
    PENDULUM_STYLE,
    SceneStyle,
    draw_links,
    draw_scene,
    scene_frame_table,
)

OBS_TYPES = ("pixels", "state", "pixels_state")
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 1024

Range = tuple[float, float]
Float64Array = NDArray[np.float64]


def _check_number(name: str, value: Any, *, minimum: float, inclusive: bool) -> float:
    """``value`` as a finite float ``> minimum`` (``>=`` when ``inclusive``), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    number = float(value)
    in_bounds = number >= minimum if inclusive else number > minimum
    if not math.isfinite(number) or not in_bounds:
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name}: expected a finite number {relation} {minimum}, got {value!r}")
    return number


def _check_range(name: str, value: Any, *, minimum: float, inclusive: bool) -> Range | None:
    """``value`` as a ``(low, high)`` tuple with ``low < high`` both valid, or None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name}: expected None or a (low, high) pair, got {value!r}")
    low = _check_number(f"{name}[0]", value[0], minimum=minimum, inclusive=inclusive)
    high = _check_number(f"{name}[1]", value[1], minimum=minimum, inclusive=inclusive)
    if not low < high:
        raise ValueError(f"{name}: expected low < high, got ({low}, {high})")
    return (low, high)


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"{name}: expected {MIN_IMAGE_SIZE} <= {name} <= {MAX_IMAGE_SIZE} pixels, got {value}"
        )
    return int(value)


@dataclass(frozen=True)
class _SystemConfig:
    """Fields shared by every pendulum system (validated in ``__post_init__``)."""

    obs_type: str = "pixels"
    """One of "pixels" (RGB uint8 image), "state" (float32 vector), "pixels_state" (both)."""
    image_size: int = 64
    """Height and width in pixels of the observed image, 8 to 1024."""
    render_size: int = 256
    """Height and width of ``render()``'s ``rgb_array`` frames and of the human window."""
    dt: float = 0.05
    """Time step in seconds."""

    parameter_names: ClassVar[tuple[str, ...]] = ()
    _positive: ClassVar[tuple[str, ...]] = ("dt", "max_speed", "max_torque")
    _non_negative: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type: expected one of {OBS_TYPES}, got {self.obs_type!r}")
        object.__setattr__(self, "image_size", _check_size("image_size", self.image_size))
        object.__setattr__(self, "render_size", _check_size("render_size", self.render_size))
        for name in (*self.parameter_names, *self._positive):
            inclusive = name in self._non_negative
            value = _check_number(name, getattr(self, name), minimum=0.0, inclusive=inclusive)
            object.__setattr__(self, name, value)
        for name in self.parameter_names:
            inclusive = name in self._non_negative
            key = f"{name}_range"
            value = _check_range(key, getattr(self, key), minimum=0.0, inclusive=inclusive)
            object.__setattr__(self, key, value)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Any:
        """The config of an env's keyword arguments, refusing a parameter given both a fixed
        value and a ``*_range`` (the range would silently win)."""
        for name in cls.parameter_names:
            if name in kwargs and kwargs.get(f"{name}_range") is not None:
                raise ValueError(
                    f"{name}={kwargs[name]!r} and {name}_range={kwargs[f'{name}_range']!r}: "
                    f"expected one of them (a range draws {name} per episode, replacing the fixed "
                    f"value); pass {name}_range=None to fix it"
                )
        return cls(**kwargs)

    def fixed_parameters(self) -> NDArray[np.float64]:
        """``(P,)`` float64 values of the physical parameters, in ``parameter_names`` order."""
        return np.array([getattr(self, name) for name in self.parameter_names], dtype=np.float64)

    def randomised(self) -> tuple[tuple[int, Range], ...]:
        """``(column, (low, high))`` of the parameters drawn per episode, in draw order."""
        return tuple(
            (column, getattr(self, f"{name}_range"))
            for column, name in enumerate(self.parameter_names)
            if getattr(self, f"{name}_range") is not None
        )


@dataclass(frozen=True)
class PendulumConfig(_SystemConfig):
    """Physics and observation settings of ``NoetherControl/PixelPendulum-v0``.

    Defaults reproduce Gymnasium's ``Pendulum-v1``. A ``*_range`` ``(low, high)`` replaces the
    fixed value by a uniform draw from ``[low, high)`` at every reset (None keeps it fixed).
    """

    gravity: float = 10.0
    """Gravitational acceleration g in m/s², >= 0."""
    mass: float = 1.0
    """Rod mass m in kg, > 0: a uniform rod, with moment of inertia m l²/3 about the axle
    (Pendulum-v1's dynamics)."""
    length: float = 1.0
    """Rod length l in m, > 0 (the drawn rod keeps a fixed length)."""
    damping: float = 0.0
    """Viscous friction b at the axle in N·m·s/rad, >= 0."""
    max_torque: float = 2.0
    """Torque bound in N·m; actions are clipped to ``[-max_torque, max_torque]``."""
    max_speed: float = 8.0
    """Angular speed bound in rad/s (θ̇ is clipped after each step)."""
    gravity_range: Range | None = None
    mass_range: Range | None = None
    length_range: Range | None = None
    damping_range: Range | None = None

    parameter_names: ClassVar[tuple[str, ...]] = ("gravity", "mass", "length", "damping")
    _non_negative: ClassVar[tuple[str, ...]] = ("gravity", "damping")


@dataclass(frozen=True)
class DoublePendulumConfig(_SystemConfig):
    """Physics and observation settings of ``NoetherControl/PixelDoublePendulum-v0``.

    A ``*_range`` ``(low, high)`` replaces the fixed value by a uniform draw from ``[low, high)``
    at every reset (None keeps it fixed).
    """

    gravity: float = 10.0
    """Gravitational acceleration g in m/s², >= 0."""
    mass1: float = 1.0
    """Mass of the first (actuated, base) rod in kg, > 0; both rods are uniform, so the first
    link's inertia about the axle is (m₁/3 + m₂) l₁²."""
    mass2: float = 1.0
    """Mass of the second rod in kg, > 0."""
    length1: float = 1.0
    """Length of the first rod in m, > 0."""
    length2: float = 1.0
    """Length of the second rod in m, > 0 (the drawn rods keep fixed lengths, as in the single
    pendulum)."""
    damping: float = 0.0
    """Viscous friction b at each joint (on its relative angular velocity) in N·m·s/rad, >= 0."""
    max_torque: float = 5.0
    """Torque bound at the base joint in N·m; actions are clipped to it."""
    max_speed: float = 10.0 * math.pi
    """Bound on both angular speeds in rad/s, applied after each step."""
    substeps: int = 24
    """RK4 steps per ``dt`` (24 keeps the free energy drift below 1e-4 over 1,000 steps)."""
    gravity_range: Range | None = None
    mass1_range: Range | None = None
    mass2_range: Range | None = None
    length1_range: Range | None = None
    length2_range: Range | None = None
    damping_range: Range | None = None

    parameter_names: ClassVar[tuple[str, ...]] = (
        "gravity",
        "mass1",
        "mass2",
        "length1",
        "length2",
        "damping",
    )
    _non_negative: ClassVar[tuple[str, ...]] = ("gravity", "damping")

    def __post_init__(self) -> None:
        super().__post_init__()
        substeps = self.substeps
        if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)):
            raise TypeError(f"substeps: expected an int, got {type(substeps).__name__}")
        if substeps < 1:
            raise ValueError(f"substeps: expected >= 1, got {substeps}")


def _parse_reset_bounds(options: Mapping[str, Any] | None, default_x: float) -> tuple[float, float]:
    """``(x_init, y_init)`` from reset ``options`` as ``Pendulum-v1`` reads them."""
    if options is None:
        return default_x, 1.0
    bounds = []
    for name, default in (("x_init", default_x), ("y_init", 1.0)):
        value = options.get(name, default)
        description = (f"options[{name!r}]: expected a finite number >= 0 (the state is drawn "
                       f"from [-{name}, {name}]), got {value!r}")
        try:
            bound = utils.verify_number_and_cast(value)
        except ValueError:
            raise ValueError(description) from None
        # NaN, inf and bounds whose range 2 * bound overflows fail inside numpy's sampler
        if not (bound >= 0 and math.isfinite(2 * bound)):
            raise ValueError(description)
        bounds.append(bound)
    return bounds[0], bounds[1]


class PendulumSystemBase:
    """One physical system batched over environments; see the module docstring.

    Subclasses set ``config_type``, ``state_dim``, ``style`` and the functions of their physics;
    everything is ``(N, ·)``-batched and draws randomness only from the generator it is given.
    """

    config_type: ClassVar[type[_SystemConfig]]
    state_dim: ClassVar[int]
    action_dim: ClassVar[int] = 1
    style: ClassVar[SceneStyle]
    step_function: ClassVar[Callable[..., NDArray[np.float64]]]
    """``(states, actions, *params, **settings)`` → next states (``dynamics.*_step``)."""
    step_settings: ClassVar[tuple[str, ...]] = ("dt", "max_speed", "max_torque")
    """Config fields passed to :attr:`step_function` by name."""
    reward_function: ClassVar[Callable[..., NDArray[np.float64]]]
    """``(states, actions, max_torque=…)`` → rewards (``dynamics.*_reward``)."""
    energy_function: ClassVar[Callable[..., NDArray[np.float64]]]
    """``(states, *params[:energy_parameters])`` → energies (``dynamics.*_energy``)."""
    energy_parameters: ClassVar[int]
    """How many leading physical parameters the energy depends on."""
    observation_function: ClassVar[Callable[[NDArray[np.float64]], NDArray[np.float32]]]
    """``states`` → state observations (``dynamics.*_observation``)."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Self:
        """The system of an env's keyword arguments (those of its ``config_type``)."""
        return cls(cls.config_type.from_kwargs(**kwargs))

    def __init__(self, config: _SystemConfig) -> None:
        self.config = config
        self.parameter_names = config.parameter_names
        self.fixed_parameters = config.fixed_parameters()
        self.randomised = config.randomised()
        high = float(config.max_torque)
        self.action_space = spaces.Box(low=-high, high=high, shape=(1,), dtype=np.float32)
        state_high = self.state_observation_high()
        state_space = spaces.Box(low=-state_high, high=state_high, dtype=np.float32)
        size = config.image_size
        pixel_space = spaces.Box(low=0, high=255, shape=(size, size, 3), dtype=np.uint8)
        self.observation_space: spaces.Space[Any]
        if config.obs_type == "pixels":
            self.observation_space = pixel_space
        elif config.obs_type == "state":
            self.observation_space = state_space
        else:
            self.observation_space = spaces.Dict({"pixels": pixel_space, "state": state_space})
        if config.obs_type != "state":
            # Build (or fetch) the cached frame table now rather than inside the first step.
            scene_frame_table(size, self.style)

    # -- the system's physics, from envs/dynamics.py ---------------------------------------------
    def step(
        self, states: Float64Array, actions: NDArray[np.floating], params: Float64Array
    ) -> NDArray[np.float64]:
        """Next states ``(N, D)`` from states ``(N, D)``, actions ``(N, 1)``, params ``(N, P)``."""
        settings = {name: getattr(self.config, name) for name in self.step_settings}
        return self.step_function(states, actions, *params.T, **settings)

    def reward(
        self, states: NDArray[np.float64], actions: NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """``(N,)`` float64 rewards of taking ``actions`` in ``states``."""
        return self.reward_function(states, actions, max_torque=self.config.max_torque)

    def energy(
        self, states: NDArray[np.float64], params: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``(N,)`` float64 mechanical energies in J."""
        return self.energy_function(states, *params[:, : self.energy_parameters].T)

    def state_observation(self, states: NDArray[np.float64]) -> NDArray[np.float32]:
        """``(N, obs_dim)`` float32 state observations."""
        return self.observation_function(states)

    # -- shared logic --------------------------------------------------------------------------
    # States are the L links' absolute angles then their angular velocities, ``(N, 2L)``; state
    # observations are ``(cos, sin)`` of each angle then the velocities, ``(N, 3L)``.
    def state_observation_high(self) -> NDArray[np.float32]:
        """Upper bounds of the state observation (symmetric)."""
        links = self.style.num_links
        return np.array([1.0] * 2 * links + [self.config.max_speed] * links, dtype=np.float32)

    def reset_high(self, options: Mapping[str, Any] | None) -> NDArray[np.float64]:
        """``(D,)`` bounds of the symmetric uniform reset distribution of the state: every angle
        within ``x_init`` (default π), every speed within ``y_init`` capped at ``max_speed`` (a
        faster start would lie outside the observation space)."""
        x, y = _parse_reset_bounds(options, default_x=np.pi)
        links = self.style.num_links
        return np.array([x] * links + [min(y, self.config.max_speed)] * links)

    def link_angles(self, states: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(N, L)`` absolute angles of the drawn links."""
        return states[:, : self.style.num_links]

    def render_pixels(
        self, states: NDArray[np.float64], out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """Observation frames ``(N, image_size, image_size, 3)`` uint8 of ``states``."""
        return draw_scene(self.link_angles(states), self.config.image_size, self.style, out=out)

    def render_frames(self, states: NDArray[np.float64], size: int) -> NDArray[np.uint8]:
        """The same scene drawn directly at ``size`` pixels: ``(N, size, size, 3)`` uint8."""
        return draw_links(self.link_angles(states), size, self.style)

    def sample_reset(
        self, rng: np.random.Generator, options: Mapping[str, Any] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Draw one initial state ``(D,)`` then the randomised parameters ``(P,)`` from ``rng``.

        The state comes first, with exactly ``Pendulum-v1``'s call, so that without randomised
        parameters the generator is used exactly as there.
        """
        high = self.reset_high(options)
        state = rng.uniform(low=-high, high=high)
        params = self.fixed_parameters.copy()
        for column, (low, high_value) in self.randomised:
            params[column] = rng.uniform(low, high_value)
        return state, params

    def check_actions(self, actions: Any, batch_shape: tuple[int, ...]) -> NDArray[np.floating]:
        """Validate ``actions`` of shape ``batch_shape + (1,)``; return them as a float array.

        Finite out-of-range torques are accepted (the dynamics clip them); NaN/inf, non-numeric
        values and wrong shapes raise.
        """
        expected = (*batch_shape, self.action_dim)
        bound = self.config.max_torque
        description = (
            f"expected a float array of shape {expected} with torques in "
            f"[{-bound}, {bound}] N·m (larger finite values are clipped)"
        )
        try:
            array = np.asarray(actions)
        except (TypeError, ValueError) as error:
            raise ValueError(f"action: {description}, got {actions!r}") from error
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"action: {description}, got dtype {array.dtype}")
        if np.issubdtype(array.dtype, np.complexfloating):
            raise TypeError(f"action: {description}, got dtype {array.dtype}")
        if array.shape != expected:
            raise ValueError(f"action: {description}, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"action: {description}, got non-finite values {array.tolist()}")
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
        return array

    def observe(
        self, states: NDArray[np.float64], pixel_buffer: NDArray[np.uint8] | None = None
    ) -> Any:
        """Observations of ``states`` per ``obs_type``; pixels are written into ``pixel_buffer``."""
        obs_type = self.config.obs_type
        if obs_type == "state":
            return self.state_observation(states)
        pixels = self.render_pixels(states, out=pixel_buffer)
        if obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "state": self.state_observation(states)}


class PendulumSystem(PendulumSystemBase):
    """The single pendulum (``Pendulum-v1`` physics plus mass, length and damping)."""

    config_type = PendulumConfig
    state_dim = dynamics.PENDULUM_STATE_DIM
    style = PENDULUM_STYLE
    config: PendulumConfig
    step_function = staticmethod(dynamics.pendulum_step)
    reward_function = staticmethod(dynamics.pendulum_reward)
    energy_function = staticmethod(dynamics.pendulum_energy)
    energy_parameters = 3
    observation_function = staticmethod(dynamics.pendulum_observation)


class DoublePendulumSystem(PendulumSystemBase):
    """The double pendulum actuated at its base joint (a pendubot): two uniform rods, stepped by
    ``substeps`` classical RK4 steps per ``dt`` (energy drift below 1e-4 over 1,000 free steps)."""

    config_type = DoublePendulumConfig
    state_dim = dynamics.DOUBLE_PENDULUM_STATE_DIM
    style = DOUBLE_PENDULUM_STYLE
    config: DoublePendulumConfig
    step_function = staticmethod(dynamics.double_pendulum_step)
    step_settings = ("dt", "max_speed", "max_torque", "substeps")
    reward_function = staticmethod(dynamics.double_pendulum_reward)
    energy_function = staticmethod(dynamics.double_pendulum_energy)
    energy_parameters = 5
    observation_function = staticmethod(dynamics.double_pendulum_observation)
