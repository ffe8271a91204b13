"""A small typed expression language for conserved quantities, and its enumeration.

Formulas are trees over ``Input(i)`` (a data column with a unit), ``Param`` (a trainable scalar
whose unit is whatever makes the formula type-check) and the operators ``+ - * / sin cos square``.
Every parameter leaf is its own parameter; they are numbered ``k0, k1, ...`` in post-order.

Units (see :mod:`noether_control.discovery.units`): only equal units add or subtract; ``sin`` and
``cos`` take a dimensionless or angle argument. A sub-formula that contains a parameter in a
scaling position (``k*q``, ``q/k``, ``square(k*q)``) has a *free* unit: the parameter absorbs
whatever unit its context requires, so ``p**2 - k*cos(q)`` types with ``k`` in ``rad^2/s^2``.
Free ``sin``/``cos`` arguments are bound to radians and a free top-level formula to ``1``.

The *size* of a formula is its number of nodes (``p**2 - k*cos(q)`` has 7); enumeration is by
size, which is what "depth" means in the discovery config and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import sympy

from noether_control.discovery.units import DIMENSIONLESS, RADIAN, Unit

UNARY_OPS: tuple[str, ...] = ("sin", "cos", "square")
BINARY_OPS: tuple[str, ...] = ("add", "sub", "mul", "div")
COMMUTATIVE_OPS = frozenset({"add", "mul"})


class UnitError(ValueError):
    """A formula adds unequal units or takes ``sin``/``cos`` of a dimensioned quantity."""


@dataclass(frozen=True)
class Expr:
    """A formula node.

    Attributes:
        op: ``"input"``, ``"param"``, one of :data:`UNARY_OPS` or :data:`BINARY_OPS`.
        children: the operands (none for leaves).
        index: the input column index for ``op == "input"``.
    """

    op: str
    children: tuple[Expr, ...] = ()
    index: int = 0
    size: int = field(init=False, compare=False, repr=False)
    n_params: int = field(init=False, compare=False, repr=False)
    has_input: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        arity = 0 if self.op in ("input", "param") else 1 if self.op in UNARY_OPS else 2
        if self.op not in ("input", "param", *UNARY_OPS, *BINARY_OPS):
            raise ValueError(f"Expr op: expected input, param, {UNARY_OPS} or {BINARY_OPS}, "
                             f"got {self.op!r}")
        if len(self.children) != arity:
            raise ValueError(f"Expr {self.op}: expected {arity} operands, got {len(self.children)}")
        object.__setattr__(self, "size", 1 + sum(child.size for child in self.children))
        object.__setattr__(self, "n_params", int(self.op == "param")
                           + sum(child.n_params for child in self.children))
        object.__setattr__(self, "has_input", self.op == "input"
                           or any(child.has_input for child in self.children))

    def postfix(self) -> tuple[str, ...]:
        """Post-order tokens: ``x<i>``, ``k`` or an operator name."""
        own = f"x{self.index}" if self.op == "input" else "k" if self.op == "param" else self.op
        return (*(token for child in self.children for token in child.postfix()), own)

    def shape(self) -> tuple[str, ...]:
        """The post-order tokens with every leaf written ``L``: formulas of one shape are
        evaluated together as one tensor program."""
        return tuple("L" if token == "k" or token.startswith("x") else token
                     for token in self.postfix())

    def leaves(self) -> tuple[Expr, ...]:
        """The leaves in post-order."""
        if not self.children:
            return (self,)
        return tuple(leaf for child in self.children for leaf in child.leaves())


def inp(index: int) -> Expr:
    """The input column ``index``."""
    return Expr("input", index=index)


def param() -> Expr:
    """A new trainable parameter."""
    return Expr("param")


def unary(op: str, child: Expr) -> Expr:
    """``op(child)`` for ``op`` in :data:`UNARY_OPS`."""
    return Expr(op, (child,))


def binary(op: str, left: Expr, right: Expr) -> Expr:
    """``left op right`` for ``op`` in :data:`BINARY_OPS`."""
    return Expr(op, (left, right))


def infer_unit(expr: Expr, input_units: Sequence[Unit]) -> Unit | None:
    """The unit of ``expr``, or ``None`` when a scaling parameter leaves it free.

    Raises:
        UnitError: when ``expr`` adds unequal units or applies ``sin``/``cos`` to a quantity that
            is neither dimensionless nor an angle.
    """
    if expr.op == "input":
        if not 0 <= expr.index < len(input_units):
            raise ValueError(f"input index: expected < {len(input_units)}, got {expr.index}")
        return input_units[expr.index]
    if expr.op == "param":
        return None
    units = [infer_unit(child, input_units) for child in expr.children]
    if expr.op in ("sin", "cos"):
        (unit,) = units
        if unit is not None and not (unit.is_dimensionless or unit.is_angle):
            raise UnitError(f"{expr.op} takes a dimensionless or angle argument, got {unit}")
        return DIMENSIONLESS
    if expr.op == "square":
        return None if units[0] is None else units[0] ** 2
    left, right = units
    if expr.op in ("add", "sub"):
        if left is not None and right is not None and left != right:
            raise UnitError(f"cannot {expr.op} {left} and {right}: only equal units add")
        return left if left is not None else right
    if left is None or right is None:
        return None
    return left * right if expr.op == "mul" else left / right


def param_units(expr: Expr, input_units: Sequence[Unit]) -> list[Unit]:
    """The unit of each parameter of ``expr`` in post-order (a free formula is bound to ``1``)."""
    top = infer_unit(expr, input_units)
    return _bind(expr, DIMENSIONLESS if top is None else top, input_units)


def _bind(expr: Expr, target: Unit, input_units: Sequence[Unit]) -> list[Unit]:
    if expr.op == "param":
        return [target]
    if expr.op == "input":
        return []
    units = [infer_unit(child, input_units) for child in expr.children]
    if expr.op in ("sin", "cos"):
        return _bind(expr.children[0], RADIAN if units[0] is None else units[0], input_units)
    if expr.op == "square":
        inner = target ** Fraction(1, 2) if units[0] is None else units[0]
        return _bind(expr.children[0], inner, input_units)
    left, right = expr.children
    left_unit, right_unit = units
    if expr.op in ("add", "sub"):
        targets = (target, target)
    elif expr.op == "mul":
        if left_unit is None and right_unit is None:
            targets = (DIMENSIONLESS, target)
        elif left_unit is None:
            targets = (target / right_unit, right_unit)
        else:
            targets = (left_unit, target / left_unit if right_unit is None else right_unit)
    elif left_unit is None and right_unit is None:
        targets = (target, DIMENSIONLESS)
    elif left_unit is None:
        targets = (target * right_unit, right_unit)
    else:
        targets = (left_unit, left_unit / target if right_unit is None else right_unit)
    return [*_bind(left, targets[0], input_units), *_bind(right, targets[1], input_units)]


def param_names(n_params: int, input_names: Sequence[str]) -> list[str]:
    """``k0, k1, ...``, or ``theta0, ...`` when a column is already called ``k<i>``."""
    stem = "theta" if any(name.startswith("k") and name[1:].isdigit() for name in input_names) \
        else "k"
    return [f"{stem}{i}" for i in range(n_params)]


def to_sympy(expr: Expr, input_names: Sequence[str],
             values: Sequence[float] | None = None) -> sympy.Expr:
    """The sympy form of ``expr`` over the input names, parameters by name or by ``values``."""
    names = param_names(expr.n_params, input_names)
    leaves = iter(names if values is None else [sympy.Float(v, 6) for v in values])

    def convert(node: Expr) -> sympy.Expr:
        if node.op == "input":
            return sympy.Symbol(input_names[node.index])
        if node.op == "param":
            leaf = next(leaves)
            return sympy.Symbol(leaf) if isinstance(leaf, str) else leaf
        args = [convert(child) for child in node.children]
        if node.op == "sin":
            return sympy.sin(args[0])
        if node.op == "cos":
            return sympy.cos(args[0])
        if node.op == "square":
            return args[0] ** 2
        left, right = args
        return {"add": left + right, "sub": left - right, "mul": left * right,
                "div": left / right}[node.op]

    return convert(expr)


@dataclass
class Enumeration:
    """The type-correct formulas up to a size, before observational de-duplication.

    Attributes:
        formulas: formulas in order of size (smallest first).
        units: the unit of each formula (``None`` when free).
        per_size: number of formulas of each size.
        rejected_units: number of syntactically valid formulas rejected by the unit checker.
    """

    formulas: list[Expr]
    units: list[Unit | None]
    per_size: dict[int, int]
    rejected_units: int


def enumerate_formulas(input_units: Sequence[Unit], max_size: int, max_params: int = 2,
                       ops: Sequence[str] = (*UNARY_OPS, *BINARY_OPS)) -> Enumeration:
    """All type-correct formulas with at most ``max_size`` nodes and ``max_params`` parameters.

    Syntactic pruning (each rule removes only formulas equivalent to a kept one or useless as a
    conserved quantity): operands of ``+`` and ``*`` in canonical order (commutativity); no
    sub-formula without an input other than a bare parameter (``k*k`` is just a parameter);
    no ``e - e`` or ``e / e`` for an ``e`` without constants (with constants each ``k`` is its own:
    ``cos(k0*q) - cos(k1*q)`` stays); no bare parameter as a whole formula.
    """
    if max_size < 1:
        raise ValueError(f"max_size: expected >= 1, got {max_size}")
    if max_params < 0:
        raise ValueError(f"max_params: expected >= 0, got {max_params}")
    unknown = set(ops) - set(UNARY_OPS) - set(BINARY_OPS)
    if unknown:
        raise ValueError(f"ops: expected a subset of {UNARY_OPS + BINARY_OPS}, "
                         f"got {sorted(unknown)}")
    by_size: dict[int, list[tuple[Expr, Unit | None, tuple[str, ...]]]] = {}
    leaves = [inp(i) for i in range(len(input_units))] + ([param()] if max_params > 0 else [])
    by_size[1] = [(leaf, infer_unit(leaf, input_units), leaf.postfix()) for leaf in leaves]
    rejected = 0
    for size in range(2, max_size + 1):
        level: list[tuple[Expr, Unit | None, tuple[str, ...]]] = []
        for op in (o for o in ops if o in UNARY_OPS):
            for child, unit, _ in by_size[size - 1]:
                if not child.has_input:
                    continue
                if op in ("sin", "cos") and unit is not None and not (
                        unit.is_dimensionless or unit.is_angle):
                    rejected += 1
                    continue
                new = unary(op, child)
                level.append((new, DIMENSIONLESS if op != "square" else
                              (None if unit is None else unit ** 2), new.postfix()))
        for op in (o for o in ops if o in BINARY_OPS):
            for left_size in range(1, size - 1):
                right_size = size - 1 - left_size
                for left, left_unit, left_key in by_size[left_size]:
                    for right, right_unit, right_key in by_size[right_size]:
                        if not (left.has_input or right.has_input):
                            continue
                        if left.n_params + right.n_params > max_params:
                            continue
                        if op in COMMUTATIVE_OPS and (left_size, left_key) > (right_size,
                                                                               right_key):
                            continue
                        if op in ("sub", "div") and left_key == right_key and not left.n_params:
                            continue
                        if op in ("add", "sub"):
                            if left_unit is not None and right_unit is not None \
                                    and left_unit != right_unit:
                                rejected += 1
                                continue
                            unit = left_unit if left_unit is not None else right_unit
                        elif left_unit is None or right_unit is None:
                            unit = None
                        else:
                            unit = left_unit * right_unit if op == "mul" else left_unit / right_unit
                        new = binary(op, left, right)
                        level.append((new, unit, new.postfix()))
        by_size[size] = level
    formulas: list[Expr] = []
    units: list[Unit | None] = []
    per_size: dict[int, int] = {}
    for size in range(1, max_size + 1):
        kept = [(expr, unit) for expr, unit, _ in by_size[size] if expr.has_input]
        per_size[size] = len(kept)
        formulas.extend(expr for expr, _ in kept)
        units.extend(unit for _, unit in kept)
    return Enumeration(formulas, units, per_size, rejected)
