"""Trajectories for discovery: HNN-style generated systems and a loader for measured files.

A :class:`Trajectories` holds ragged trajectories (each its own length and time stamps) of named
state columns with physical units. Generated systems follow Hamiltonian Neural Networks
(Greydanus et al. 2019): the ideal spring ``H = q^2 + p^2`` and the ideal pendulum
``H = 3(1 - cos q) + p^2``, integrated with ``scipy.integrate.solve_ivp`` (RK45,
rtol = atol = 1e-10),
Gaussian noise added to the observed states.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

from noether_control.discovery.units import Unit, parse_unit

MIN_POINTS_PER_TRAJECTORY = 5
SMOOTHING_TOLERANCE = 5.0
"""Smoothing is kept unless it removes more than ``1 + SMOOTHING_TOLERANCE / sqrt(N)`` times the
noise variance it should remove from N samples (:meth:`Trajectories.smoothing_excess`). On pure
noise that ratio scatters by 2 / sqrt(N) (measured for N = 64 ... 1125), so this is 2.5 standard
deviations. On the HNN data (N = 750-1125, 38 samples per oscillation, noise 0.1) it was
0.89-1.11 over seeds 0-7, under the 1.15-1.18 allowed; on pendulum recordings sampled at 6 Hz (18
samples per oscillation, noise 0.01-0.03, N = 275) 1.40-4.68 for a 7-sample window, over the
1.30 allowed: there the smoothing biased the fitted constant by -2 to -3%, raw states by < 1.3%.
"""


@dataclass
class Trajectories:
    """Ragged trajectories of named state columns with units.

    Attributes:
        names: state column names, e.g. ``["q", "p"]``.
        units: one :class:`Unit` per state column.
        states: per trajectory a float64 array ``(T_i, D)``.
        times: per trajectory a strictly increasing float64 array ``(T_i,)``.
        energy: the true conserved quantity as a sympy string over ``names`` when known.
        clean: per trajectory the noise-free states ``(T_i, D)`` when known (generated data);
            evaluation compares predictions with them.
    """

    names: list[str]
    units: list[Unit]
    states: list[np.ndarray]
    times: list[np.ndarray]
    energy: str | None = None
    clean: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.units):
            raise ValueError(f"expected one unit per column ({len(self.names)}), "
                             f"got {len(self.units)}")
        if len(self.states) != len(self.times) or not self.states:
            raise ValueError(f"expected >= 1 trajectory with matching times, got "
                             f"{len(self.states)} state and {len(self.times)} time arrays")
        for index, (states, times) in enumerate(zip(self.states, self.times, strict=True)):
            if states.ndim != 2 or states.shape[1] != len(self.names) or times.shape != (
                    states.shape[0],):
                raise ValueError(f"trajectory {index}: expected states (T, {len(self.names)}) "
                                 f"and times (T,), got {states.shape} and {times.shape}")

    def __len__(self) -> int:
        return len(self.states)

    def subset(self, indices: Sequence[int]) -> Trajectories:
        """The trajectories at ``indices``."""
        clean = None if self.clean is None else [self.clean[i] for i in indices]
        return Trajectories(self.names, self.units, [self.states[i] for i in indices],
                            [self.times[i] for i in indices], self.energy, clean)

    def split(self, test_fraction: float, rng: np.random.Generator | None = None
              ) -> tuple[Trajectories, Trajectories]:
        """(train, test): the last ``test_fraction`` of trajectories (shuffled by ``rng`` if given).

        Both halves keep at least one trajectory. A single trajectory (one long measurement) is
        split in time instead: its first samples train, its last ``test_fraction`` test.
        """
        if len(self) == 1:
            return self._split_in_time(test_fraction)
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        n_test = min(max(1, round(len(self) * test_fraction)), len(self) - 1)
        return self.subset(order[:-n_test].tolist()), self.subset(order[-n_test:].tolist())

    def _split_in_time(self, test_fraction: float) -> tuple[Trajectories, Trajectories]:
        length = len(self.times[0])
        n_test = round(length * test_fraction)
        if min(n_test, length - n_test) < MIN_POINTS_PER_TRAJECTORY:
            raise ValueError(f"one trajectory of {length} samples: splitting it in time at "
                             f"test_fraction {test_fraction:g} leaves {length - n_test} train and "
                             f"{n_test} test samples; expected >= {MIN_POINTS_PER_TRAJECTORY} each")
        halves = []
        for part in (slice(0, length - n_test), slice(length - n_test, length)):
            clean = None if self.clean is None else [self.clean[0][part]]
            halves.append(Trajectories(self.names, self.units, [self.states[0][part]],
                                       [self.times[0][part]], self.energy, clean))
        return halves[0], halves[1]

    def pieces(self, length: int) -> Trajectories:
        """Each trajectory longer than ``length`` samples cut into ``ceil(T / length)``
        consecutive pieces of near-equal length (at most ``length``); shorter ones kept whole."""
        states, times, clean = [], [], []
        for index, trajectory in enumerate(self.states):
            n_pieces = -(-len(trajectory) // length)
            for part in np.array_split(np.arange(len(trajectory)), n_pieces):
                states.append(trajectory[part])
                times.append(self.times[index][part])
                if self.clean is not None:
                    clean.append(self.clean[index][part])
        return Trajectories(self.names, self.units, states, times, self.energy,
                            clean if self.clean is not None else None)

    def smoothed(self, window: int, order: int = 3) -> Trajectories:
        """Denoised copy: each sample replaced by a local polynomial fit in *time*.

        Every sample gets a degree-``order`` least-squares polynomial through the ``window``
        samples nearest in index (shifted inwards at the ends), evaluated at its own time stamp,
        so irregular steps are handled. Noise in the inputs biases variance-minimising fits
        (errors in variables), so discovery fits on smoothed states. ``window <= order`` returns
        ``self``.
        """
        if window <= order:
            return self
        smoothed = [_local_polynomial(states, times, window, order)[0]
                    for states, times in zip(self.states, self.times, strict=True)]
        return Trajectories(self.names, self.units, smoothed, self.times, self.energy,
                            self.clean)

    def smoothing_gains(self, window: int, order: int = 3) -> list[np.ndarray]:
        """Per trajectory ``(T_i,)``: the factor by which :meth:`smoothed` scales the variance
        of independent noise at each sample (1 for raw states, about 1/3 in the middle of a
        7-sample cubic window, more at the ends)."""
        if window <= order:
            return [np.ones(len(times)) for times in self.times]
        return [_local_polynomial(states, times, window, order)[1]
                for states, times in zip(self.states, self.times, strict=True)]

    def smoothing_excess(self, window: int, order: int = 3) -> np.ndarray:
        """Per column ``(D,)``: what :meth:`smoothed` removes from the states, in units of what
        the noise alone would make it remove.

        For independent noise of variance s^2 the removed part ``x - x_smoothed`` has variance
        ``s^2 (1 - g_t)`` at sample t (``g_t`` from :meth:`smoothing_gains`: the fit is a
        projection within its window), so the ratio is about 1 when the window is short against
        the motion and well above 1 when the smoothing also flattens the motion itself (a
        7-sample cubic over a third of a pendulum's period: 1.4-4.7, which biased a fitted
        constant by -2%)."""
        if window <= order:
            return np.ones(len(self.names))
        smoothed = self.smoothed(window, order)
        removed = sum(((raw - smooth) ** 2).sum(axis=0)
                      for raw, smooth in zip(self.states, smoothed.states, strict=True))
        expected = sum(float((1.0 - gains).sum()) for gains in
                       self.smoothing_gains(window, order)) * self.noise_std() ** 2
        return removed / np.maximum(expected, np.finfo(np.float64).tiny)

    def checked_smoothing(self, window: int) -> tuple[int, float]:
        """``(window, excess)``: the smoothing ``window`` to use, and the largest
        :meth:`smoothing_excess`: ``window`` itself when the excess is within what the noise
        explains (:data:`SMOOTHING_TOLERANCE`), else 0 (raw states: the smoothing would flatten
        the motion and bias every fitted constant more than the noise does)."""
        excess = float(self.smoothing_excess(window).max())
        n_samples = sum(len(times) for times in self.times)
        keep = excess <= 1.0 + SMOOTHING_TOLERANCE / math.sqrt(n_samples)
        return (window if keep else 0), excess

    def noise_std(self, order: int = 4) -> np.ndarray:
        """Per-column estimate ``(D,)`` of the observation noise's standard deviation.

        From the residual of a degree-``order`` polynomial in time through every ``order + 2``
        consecutive samples: with the actual time stamps, the unit vector ``c`` orthogonal to
        the polynomials at those times gives ``c . x``, whose variance is exactly s^2 for
        independent noise of variance s^2, while a trajectory sampled densely enough to be
        smoothed contributes only its ``order + 1``-th derivative. On evenly spaced samples
        ``order`` 2 is the classical third difference; irregular steps (dropped frames) need the
        time stamps, since plain differences of a smooth signal then do not cancel (at 6 Hz with
        dropped frames they put 0.1 into a noise of 0.01), and a higher order keeps a coarsely
        sampled motion out of the estimate (order 4: 0.0103 for a noise of 0.01 on a 3-s
        pendulum sampled at 6 Hz, order 2: 0.021). Trajectories with fewer than ``order + 2``
        samples are skipped (with only shorter ones, the order is lowered to fit them).
        """
        window = min(order + 2, max(len(times) for times in self.times))
        order = window - 2
        residuals = []
        for states, times in zip(self.states, self.times, strict=True):
            if len(times) < window:
                continue
            neighbours = np.arange(len(times) - window + 1)[:, None] + np.arange(window)[None, :]
            stamps = times[neighbours]
            scaled = (stamps - stamps[:, :1]) / (stamps[:, -1:] - stamps[:, :1])
            vandermonde = scaled[..., None] ** np.arange(order + 1)
            # The last column of a complete QR is the unit vector orthogonal to the polynomials.
            orthogonal = np.linalg.qr(vandermonde, mode="complete")[0][:, :, -1]
            residuals.append(np.einsum("wk,wkd->wd", orthogonal, states[neighbours]))
        return np.sqrt(np.mean(np.concatenate(residuals) ** 2, axis=0))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """All states stacked ``(N, D)`` and each point's trajectory index ``(N,)`` (int64)."""
        stacked = np.concatenate(self.states)
        ids = np.concatenate([np.full(len(s), i) for i, s in enumerate(self.states)])
        return stacked, ids.astype(np.int64)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One-step pairs: states ``(M, D)``, next states ``(M, D)``, time steps ``(M,)``."""
        current = np.concatenate([s[:-1] for s in self.states])
        following = np.concatenate([s[1:] for s in self.states])
        steps = np.concatenate([np.diff(t) for t in self.times])
        return current, following, steps


@dataclass
class SystemSpec:
    """An HNN-style Hamiltonian system to generate data from.

    Attributes:
        name: ``spring`` or ``pendulum``.
        energy: the Hamiltonian as a sympy string over ``q`` and ``p``.
        radius_range: initial-state radius ``sqrt(q^2 + p^2)`` drawn uniformly from this range.
        points_per_trajectory: samples per trajectory, evenly spaced over ``t_span``.
        units: units of ``q`` and ``p`` (the spring's are m and kg*m/s, the pendulum's rad and
            rad/s; HNN works in units where masses and lengths are 1).
        vector_field: ``f(t, y) -> dy/dt`` for ``y = (q, p)``.
        t_span: the time interval of every trajectory.
    """

    name: str
    energy: str
    radius_range: tuple[float, float]
    points_per_trajectory: int
    units: tuple[str, str]
    vector_field: Callable[[float, np.ndarray], np.ndarray] = field(repr=False)
    t_span: tuple[float, float] = (0.0, 3.0)


def _spring_field(_: float, y: np.ndarray) -> np.ndarray:
    q, p = y
    return np.array([2.0 * p, -2.0 * q])


def _pendulum_field(_: float, y: np.ndarray) -> np.ndarray:
    q, p = y
    return np.array([2.0 * p, -3.0 * math.sin(q)])


SYSTEMS: dict[str, SystemSpec] = {
    "spring": SystemSpec("spring", "q**2 + p**2", (0.1, 1.0), 30, ("m", "kg*m/s"),
                         _spring_field),
    "pendulum": SystemSpec("pendulum", "3*(1 - cos(q)) + p**2", (1.3, 2.3), 45, ("rad", "rad/s"),
                           _pendulum_field),
}


def generate(system: str, n_trajectories: int, noise_std: float, rng: np.random.Generator,
             points_per_trajectory: int | None = None) -> Trajectories:
    """Generate ``n_trajectories`` noisy trajectories of an HNN system (``spring``/``pendulum``).

    Initial states have a uniformly random direction and a radius from the system's range; the
    dynamics are integrated with RK45 at rtol 1e-10; then N(0, ``noise_std``^2) noise is added to
    each observed coordinate. Returns columns ``q`` and ``p``.
    """
    if system not in SYSTEMS:
        raise ValueError(f"system: expected one of {sorted(SYSTEMS)}, got {system!r}")
    if n_trajectories < 2:
        raise ValueError(f"n_trajectories: expected >= 2, got {n_trajectories}")
    if noise_std < 0:
        raise ValueError(f"noise_std: expected >= 0, got {noise_std}")
    spec = SYSTEMS[system]
    n_points = points_per_trajectory or spec.points_per_trajectory
    if n_points < MIN_POINTS_PER_TRAJECTORY:
        raise ValueError(f"points_per_trajectory: expected >= {MIN_POINTS_PER_TRAJECTORY}, "
                         f"got {n_points}")
    times = np.linspace(*spec.t_span, n_points)
    states, stamps, clean_states = [], [], []
    for _ in range(n_trajectories):
        direction = rng.uniform(-1.0, 1.0, size=2)
        start = direction / np.linalg.norm(direction) * rng.uniform(*spec.radius_range)
        solution = solve_ivp(spec.vector_field, spec.t_span, start, t_eval=times, rtol=1e-10,
                             atol=1e-10)
        clean = solution.y.T
        states.append(clean + rng.normal(0.0, noise_std, size=clean.shape))
        stamps.append(times.copy())
        clean_states.append(clean)
    units = [parse_unit(u) for u in spec.units]
    return Trajectories(["q", "p"], units, states, stamps, spec.energy, clean_states)


def load_trajectories(path: str | Path, units: Mapping[str, str], *,
                      columns: Sequence[str] | None = None, time: str = "t",
                      trajectory: str | None = None, energy: str | None = None) -> Trajectories:
    """Read measured trajectories from a CSV or whitespace-separated text file.

    The first non-blank line is the header naming the columns (a leading ``#`` or ``%`` is
    accepted, lines of only ``#``/``%`` before it are skipped, quotes around names are dropped);
    ``columns`` overrides it (and then a numeric first line is data, not a header). Later lines
    starting with ``#`` or ``%`` are comments. A UTF-8 byte-order mark is ignored. Every column
    other than ``time`` and ``trajectory`` is a state column and needs a unit in ``units``. Rows
    of one trajectory must be contiguous with strictly increasing time; irregular steps are fine
    (the time stamps are used).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the line or column at fault for missing or non-numeric columns, NaN
            values, ragged rows, unknown or missing units, non-increasing time or trajectories with
            fewer than 5 samples.
    """
    path = Path(path)
    numbered = _text_lines(path)
    names, body, separator = _columns_and_body(path, numbered, columns)
    state_names, parsed_units = _state_columns(path, names, units, time, trajectory)
    table, line_numbers = _rows(path, body, names, separator)
    # checked after the rows, whose errors (a ragged row) often explain a wrong header better
    unknown = [str(name) for name in units if name not in names]
    if unknown:
        raise ValueError(f"data.units: column(s) {unknown} are not in {str(path)!r}; its columns "
                         f"are {names} (set data.columns=[...] if the header is wrong)")
    column = {name: table[:, i] for i, name in enumerate(names)}
    boundaries = [0, len(table)] if trajectory is None else _trajectory_boundaries(
        path, column[trajectory], trajectory)
    state_matrix = np.stack([column[name] for name in state_names], axis=1)
    states, times = [], []
    for start, stop in itertools.pairwise(boundaries):
        _check_times(path, column[time][start:stop], line_numbers[start:stop])
        states.append(state_matrix[start:stop].copy())
        times.append(column[time][start:stop].copy())
    return Trajectories(state_names, parsed_units, states, times, energy)


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of the file at ``path`` as ``(line number, stripped text)``, bare
    ``#``/``%`` lines before the header dropped."""
    if not path.is_file():
        raise FileNotFoundError(f"data.path: expected a readable file, got {str(path)!r}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"data.path: expected a UTF-8 text file (CSV or whitespace-separated "
                         f"columns), got {str(path)!r}, which is not text (byte "
                         f"{error.start})") from None
    numbered = [(number, line.strip()) for number, line in enumerate(lines, start=1)
                if line.strip()]
    while numbered and not numbered[0][1].lstrip("#%").strip():
        numbered.pop(0)
    if not numbered:
        raise ValueError(f"{path}: expected a header and data rows, got no lines besides blank "
                         f"or bare comment ones")
    return numbered


def _columns_and_body(path: Path, numbered: list[tuple[int, str]],
                      columns: Sequence[str] | None
                      ) -> tuple[list[str], list[tuple[int, str]], str | None]:
    """The column names (from the header, or ``columns``), the lines after the header and the
    separator (``,`` when the first line has one, else whitespace: ``None``)."""
    first_number, first = numbered[0]
    separator = "," if "," in first else None
    header_text = first.lstrip("#%").strip()
    header = [_unquote(name) for name in header_text.split(separator)]
    first_is_data = _is_numeric_row(header)
    if columns is not None:
        names = [str(c) for c in columns]
        body = numbered if first_is_data and not first.startswith(("#", "%")) else numbered[1:]
    else:
        if first_is_data:
            raise ValueError(f"{path}:{first_number}: expected a header naming the columns, got "
                             f"numbers; name them with data.columns=[...]")
        names, body = header, numbered[1:]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: expected distinct column names, got {names}")
    return names, body, separator


def _state_columns(path: Path, names: list[str], units: Mapping[str, str], time: str,
                   trajectory: str | None) -> tuple[list[str], list[Unit]]:
    """The state columns (all but ``time`` and ``trajectory``) and their parsed units."""
    for role, name in (("time", time), ("trajectory", trajectory)):
        if name is not None and name not in names:
            raise ValueError(f"{path}: data.{role} column {name!r} not found; the columns are "
                             f"{names} (set data.columns=[...] if the header is wrong)")
    state_names = [name for name in names if name not in (time, trajectory)]
    if not state_names:
        raise ValueError(f"{path}: expected at least one state column besides {time!r}, "
                         f"got columns {names}")
    missing = [name for name in state_names if name not in units]
    if missing:
        raise ValueError(f"data.units: no unit for column(s) {missing}; give e.g. "
                         f"'data.units={{{missing[0]}: m}}'")
    parsed_units = []
    for name in state_names:
        try:
            parsed_units.append(parse_unit(str(units[name])))
        except ValueError as error:
            raise ValueError(f"data.units[{name!r}]: {error}") from error
    return state_names, parsed_units


def _rows(path: Path, body: list[tuple[int, str]], names: list[str], separator: str | None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The data rows ``(N, len(names))`` (comment lines skipped) and their line numbers
    ``(N,)``."""
    rows, row_lines = [], []
    for number, line in body:
        if line.startswith(("#", "%")):
            continue
        fields = [_unquote(value) for value in line.split(separator)]
        if len(fields) != len(names):
            raise ValueError(f"{path}:{number}: expected {len(names)} values ({', '.join(names)}),"
                             f" got {len(fields)}")
        values = []
        for name, value in zip(names, fields, strict=True):
            try:
                number_value = float(value)
            except ValueError:
                raise ValueError(f"{path}:{number}: column {name!r}: expected a number, got "
                                 f"{value!r}") from None
            if not math.isfinite(number_value):
                raise ValueError(f"{path}:{number}: column {name!r} is {value!r}; drop or fill "
                                 f"NaN/inf rows")
            values.append(number_value)
        rows.append(values)
        row_lines.append(number)
    if not rows:
        raise ValueError(f"{path}: expected data rows after the header, got none")
    return np.asarray(rows, dtype=np.float64), np.asarray(row_lines)


def _trajectory_boundaries(path: Path, labels: np.ndarray, trajectory: str) -> list[int]:
    """Row indices where each trajectory starts, then the number of rows, for the trajectory
    column ``labels`` ``(N,)``, whose values must each form one contiguous run."""
    changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    boundaries = [0, *changes.tolist(), len(labels)]
    seen = labels[np.asarray(boundaries[:-1])]
    if len(np.unique(seen)) != len(seen):
        raise ValueError(f"{path}: rows of each {trajectory!r} value must be contiguous; "
                         f"trajectory labels repeat after others")
    return boundaries


def _check_times(path: Path, stamps: np.ndarray, line_numbers: np.ndarray) -> None:
    """Refuse a trajectory with too few samples or time stamps ``(T,)`` (read from
    ``line_numbers`` ``(T,)``) that do not strictly increase."""
    label = f"trajectory starting at line {line_numbers[0]}"
    if len(stamps) < MIN_POINTS_PER_TRAJECTORY:
        raise ValueError(f"{path}: {label} has {len(stamps)} samples; expected at least "
                         f"{MIN_POINTS_PER_TRAJECTORY}")
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        bad = 1 + int(np.argmax(steps <= 0))
        raise ValueError(f"{path}:{line_numbers[bad]}: time {stamps[bad]:g} does not "
                         f"increase (previous {stamps[bad - 1]:g}) in {label}")


def _local_polynomial(states: np.ndarray, times: np.ndarray, window: int, order: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Local polynomial fit of ``states`` ``(T, D)`` over time, all samples at once: the fitted
    values ``(T, D)`` and each value's noise-variance gain ``(T,)`` (the sum of its squared
    least-squares weights, so independent noise of variance s^2 becomes gain * s^2)."""
    length = len(times)
    window = min(window, length)
    starts = np.clip(np.arange(length) - window // 2, 0, length - window)
    neighbours = starts[:, None] + np.arange(window)[None, :]  # (T, window)
    offsets = times[neighbours] - times[:, None]
    scale = np.abs(offsets).max(axis=1, keepdims=True)
    design = (offsets / scale)[..., None] ** np.arange(order + 1)  # (T, window, order+1)
    gram = np.einsum("twi,twj->tij", design, design)
    moments = np.einsum("twi,twd->tid", design, states[neighbours])
    coefficients = np.linalg.solve(gram, moments)
    # At offset 0 the polynomial is its constant coefficient, whose weights w = e0^T G^-1 X^T
    # have squared norm e0^T G^-1 e0.
    return coefficients[:, 0, :], np.linalg.inv(gram)[:, 0, 0]


def _unquote(field: str) -> str:
    """A field without surrounding whitespace and quotes (R and spreadsheets quote names)."""
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] and field[0] in "\"'":
        return field[1:-1].strip()
    return field


def _is_numeric_row(fields: Sequence[str]) -> bool:
    """True when every non-empty field reads as a float (``-inf`` and ``nan`` included)."""
    try:
        for field in fields:
            if field:
                float(field)
    except ValueError:
        return False
    return True
