"""Symbolic dimensions: polynomials over dimension names with rational coefficients.

`batch`, `3 * d`, `batch / dp` and `seq * seq` are all Dims; an int is a constant Dim. Two Dims
unify when their normal forms are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

Monomial = tuple[str, ...]  # sorted symbol names, repeated for powers; () is the constant


@dataclass(frozen=True)
class Dim:
    terms: tuple[tuple[Monomial, Fraction], ...]  # sorted, no zero coefficients

    @staticmethod
    def of(value: int | Dim) -> Dim:
        if isinstance(value, Dim):
            return value
        return Dim._make({(): Fraction(value)})

    @staticmethod
    def symbol(name: str) -> Dim:
        return Dim._make({(name,): Fraction(1)})

    @staticmethod
    def _make(terms: dict[Monomial, Fraction]) -> Dim:
        return Dim(tuple(sorted((m, c) for m, c in terms.items() if c != 0)))

    # ---- queries
    @cached_property  # costs ask for it in their inner loops; a Dim never changes
    def is_const(self) -> bool:
        return all(m == () for m, _ in self.terms)

    @cached_property
    def const(self) -> Fraction:
        """The value of a constant Dim (callers check is_const first)."""
        assert self.is_const
        return self.terms[0][1] if self.terms else Fraction(0)

    @cached_property
    def is_int(self) -> bool:
        return self.is_const and self.const.denominator == 1

    def as_int(self) -> int | None:
        return int(self.const) if self.is_int else None

    @property
    def symbols(self) -> set[str]:
        return {s for m, _ in self.terms for s in m}

    def subs(self, env: dict[str, int | Dim]) -> Dim:
        if not any(name in env for m, _ in self.terms for name in m):
            return self
        out = Dim.of(0)
        for monomial, coef in self.terms:
            term = Dim._make({(): coef})
            for name in monomial:
                term = term * (Dim.of(env[name]) if name in env else Dim.symbol(name))
            out = out + term
        return out

    # ---- arithmetic
    def __add__(self, other: int | Dim) -> Dim:
        terms = dict(self.terms)
        for m, c in Dim.of(other).terms:
            terms[m] = terms.get(m, Fraction(0)) + c
        return Dim._make(terms)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return Dim._make({m: -c for m, c in self.terms})

    def __sub__(self, other: int | Dim) -> Dim:
        return self + (-Dim.of(other))

    def __rsub__(self, other: int | Dim) -> Dim:
        return Dim.of(other) - self

    def __mul__(self, other: int | Dim) -> Dim:
        terms: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms:
            for m2, c2 in Dim.of(other).terms:
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, Fraction(0)) + c1 * c2
        return Dim._make(terms)

    __rmul__ = __mul__

    def divide(self, other: int | Dim) -> Dim | None:
        """Exact division, or None when `other` is zero or not a constant or one monomial."""
        other = Dim.of(other)
        if other.is_const:
            if other.const == 0:
                return None
            return Dim._make({m: c / other.const for m, c in self.terms})
        if len(other.terms) != 1:
            return None
        (monomial, coef), = other.terms
        terms: dict[Monomial, Fraction] = {}
        for m, c in self.terms:
            rest = list(m)
            for name in monomial:
                if name not in rest:
                    return None
                rest.remove(name)
            terms[tuple(rest)] = c / coef
        return Dim._make(terms)

    def divisible_by(self, n: int) -> bool | None:
        """Whether the Dim is a multiple of n: True/False when known, None when symbolic."""
        if self.is_const:
            return self.const.denominator == 1 and int(self.const) % n == 0
        return None

    # ---- text
    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        terms = self.terms if self.is_const else _symbolic_first(self)
        for i, (monomial, coef) in enumerate(terms):
            sign = "-" if coef < 0 else ("+" if i else "")
            mag = abs(coef)
            body = "*".join(monomial)
            if not body:
                text = str(mag)
            else:
                if mag.numerator != 1:
                    body = f"{mag.numerator}*{body}"
                if mag.denominator != 1:
                    body = f"{body}/{mag.denominator}"
                text = body
            parts.append(f" {sign} {text}" if i else f"{sign}{text}")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Dim({self})"


def _symbolic_first(dim: Dim):
    return sorted(dim.terms, key=lambda t: (t[0] == (), t[0]))
