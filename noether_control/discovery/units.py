"""Physical units with exact rational exponents over the SI base units plus the radian.

A :class:`Unit` is a vector of :class:`fractions.Fraction` exponents over
``m, kg, s, A, K, mol, cd, rad``. The radian is kept as its own dimension even though SI calls it
dimensionless: it lets the type checker tell an angle ``q`` (rad) from a pure number, so
``sin``/``cos`` accept either a dimensionless or an angle argument (exactly ``rad**1``) and
return a dimensionless value, while ``p**2`` for ``p`` in rad/s keeps its ``rad^2/s^2``. Only equal
units add.

Unit strings are products/quotients of symbols with optional integer or rational powers:
``"rad"``, ``"rad/s"``, ``"m"``, ``"kg*m^2/s^2"``, ``"m s^-1"``, ``"1"``, ``"N*m"``, ``"J"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

BASE_UNITS: tuple[str, ...] = ("m", "kg", "s", "A", "K", "mol", "cd", "rad")
"""Base dimensions, in the order of :attr:`Unit.exponents`."""


@dataclass(frozen=True, order=True)
class Unit:
    """A physical unit: exact rational exponents over :data:`BASE_UNITS`."""

    exponents: tuple[Fraction, ...]

    def __post_init__(self) -> None:
        if len(self.exponents) != len(BASE_UNITS):
            raise ValueError(
                f"Unit: expected {len(BASE_UNITS)} exponents, got {len(self.exponents)}"
            )

    @classmethod
    def dimensionless(cls) -> Unit:
        """The unit of pure numbers, ``1``."""
        return cls(tuple(Fraction(0) for _ in BASE_UNITS))

    @classmethod
    def base(cls, symbol: str) -> Unit:
        """The base unit ``symbol`` (one of :data:`BASE_UNITS`)."""
        if symbol not in BASE_UNITS:
            raise ValueError(f"base unit: expected one of {BASE_UNITS}, got {symbol!r}")
        return cls(tuple(Fraction(int(name == symbol)) for name in BASE_UNITS))

    def __mul__(self, other: Unit) -> Unit:
        return Unit(tuple(a + b for a, b in zip(self.exponents, other.exponents, strict=True)))

    def __truediv__(self, other: Unit) -> Unit:
        return Unit(tuple(a - b for a, b in zip(self.exponents, other.exponents, strict=True)))

    def __pow__(self, power: int | Fraction) -> Unit:
        return Unit(tuple(exponent * Fraction(power) for exponent in self.exponents))

    @property
    def is_dimensionless(self) -> bool:
        """True for ``1`` (a radian is *not* dimensionless here)."""
        return all(exponent == 0 for exponent in self.exponents)

    @property
    def is_angle(self) -> bool:
        """True for exactly ``rad``."""
        return self == RADIAN

    def __str__(self) -> str:
        numerator = [_power(name, e) for name, e in zip(BASE_UNITS, self.exponents, strict=True)
                     if e > 0]
        denominator = [_power(name, -e) for name, e in zip(BASE_UNITS, self.exponents, strict=True)
                       if e < 0]
        text = "*".join(numerator) or "1"
        if denominator:
            joined = "*".join(denominator)
            text += f"/({joined})" if len(denominator) > 1 else f"/{joined}"
        return text


def _power(name: str, exponent: Fraction) -> str:
    if exponent == 1:
        return name
    if exponent.denominator == 1:
        return f"{name}^{exponent.numerator}"
    return f"{name}^({exponent})"


RADIAN = Unit.base("rad")
DIMENSIONLESS = Unit.dimensionless()
SECOND = Unit.base("s")
"""The unit of the time column."""

_DERIVED: dict[str, Unit] = {
    "1": DIMENSIONLESS,
    # Grams differ from kilograms only by a factor: units here are dimensions, factors are data.
    "g": Unit.base("kg"),
    "N": Unit.base("kg") * Unit.base("m") / Unit.base("s") ** 2,
    "J": Unit.base("kg") * Unit.base("m") ** 2 / Unit.base("s") ** 2,
    "W": Unit.base("kg") * Unit.base("m") ** 2 / Unit.base("s") ** 3,
    "Hz": Unit.base("s") ** -1,
}

# Multiplication: a single '*' (not the '**' of a power), '.' or whitespace.
_TIMES = re.compile(r"(?<!\*)\*(?!\*)|[.\s]+")
_TOKEN = re.compile(r"([A-Za-z]+|1)(?:(?:\^|\*\*)(-?\d+(?:\|\d+)?)|(-?\d+))?")


def parse_unit(text: str | Unit) -> Unit:
    """Parse ``text`` such as ``"kg*m^2/s^2"`` or ``"rad/s"`` into a :class:`Unit`.

    Symbols: the base units, ``1`` and the derived ``N, J, W, Hz, g`` (only dimensions
    matter here; angles must be in radians because ``sin``/``cos`` read them so). Separators:
    ``*``, ``.``, or a space multiply; ``/`` divides everything after it up to the next ``/``
    (``a/b/c = a/(b*c)``), or the parenthesised product after it (``J/(kg*K)``). Powers:
    ``^2``, ``**2``, ``^-1``, ``^(1/2)``. ``parse_unit(str(unit)) == unit`` for every unit.

    Raises:
        ValueError: naming the part of ``text`` that is not a unit.
    """
    if isinstance(text, Unit):
        return text
    if not isinstance(text, str):
        raise TypeError(f"unit: expected a string such as 'rad/s', got {type(text).__name__}")
    # Rational powers are written ^(1/2); fold them to ^1|2 so '/' below only means division.
    cleaned = re.sub(r"(\^|\*\*)\s*\(\s*(-?\d+)\s*/\s*(\d+)\s*\)", r"^\2|\3",
                     text.strip().replace("·", "*"))
    cleaned = re.sub(r"\s*(\*\*|[*/^])\s*", r"\1", cleaned)
    # A parenthesised denominator is a product of divisors: J/(kg*K) = J/kg/K.
    cleaned = re.sub(r"/\(([^()/]*)\)", lambda m: "/" + _TIMES.sub("/", m.group(1).strip()),
                     cleaned)
    cleaned = re.sub(r"\(([^()/]*)\)", r"\1", cleaned)
    if not cleaned:
        raise ValueError("unit: expected a unit such as 'm', 'rad/s' or '1', got an empty string")
    result = DIMENSIONLESS
    for index, part in enumerate(cleaned.split("/")):
        factor = DIMENSIONLESS
        for piece in _TIMES.split(part.strip()):
            if not piece:
                raise ValueError(f"unit {text!r}: expected a symbol around '*' or '/'")
            match = _TOKEN.fullmatch(piece)
            if match is None:
                raise ValueError(f"unit {text!r}: cannot read {piece!r}; "
                                 f"expected e.g. 'kg*m^2/s^2'")
            symbol, explicit, bare = match.groups()
            try:
                power = Fraction((explicit or bare or "1").replace("|", "/"))
            except ZeroDivisionError:
                raise ValueError(f"unit {text!r}: a power divides by zero; "
                                 f"expected e.g. '^(1/2)'") from None
            if symbol in BASE_UNITS:
                unit = Unit.base(symbol)
            elif symbol in _DERIVED:
                unit = _DERIVED[symbol]
            else:
                known = ", ".join((*BASE_UNITS, *_DERIVED))
                raise ValueError(f"unit {text!r}: unknown unit {symbol!r}; expected one of {known}")
            factor = factor * unit**power
        result = result * factor if index == 0 else result / factor
    return result


def velocity_columns(units: Sequence[Unit]) -> list[int]:
    """Indices of the columns that are velocities by their units: a column whose unit is
    another column's unit per second (``m/s`` beside ``m``, ``rad/s`` beside ``rad``), i.e. the
    unit of that column's time derivative. Dimensionless columns have none."""
    return [index for index, unit in enumerate(units)
            if any(unit * SECOND == other for other in units)]
