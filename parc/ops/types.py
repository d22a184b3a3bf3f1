"""Tensor types: a dtype and a shape of symbolic dimensions."""

from __future__ import annotations

from dataclasses import dataclass

from .dims import Dim

FLOAT_DTYPES = ("f32", "f16", "bf16", "f64")
INT_DTYPES = ("i64", "i32", "i16", "i8", "u8", "u16")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)
DTYPE_BYTES = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2,
               "i8": 1, "u8": 1, "u16": 2, "bool": 1}


@dataclass(frozen=True)
class TensorT:
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"
