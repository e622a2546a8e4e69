"""Deterministic hashing of categorical values: splitmix64 for ids, BLAKE2b for strings.

Pure functions shared by preprocessing (:mod:`ranker.data`) and the hashed layers
(:mod:`ranker.nn`); in neither package, so neither imports the other.

Everything here is reproducible across processes, runs and machines: integer ids go through
``mix64`` (pure int64 tensor arithmetic), strings through BLAKE2b (``hashlib``), never through
Python's salted ``hash()``.

``mix64`` is the splitmix64 finaliser (Steele, Lea & Flood, OOPSLA 2014, "Fast Splittable
Pseudorandom Number Generators"; constants of Vigna's ``splitmix64.c``) applied to
``x + seed·γ`` with the golden-ratio increment ``γ = 0x9E3779B97F4A7C15``, all modulo 2⁶⁴::

    z = x + seed·γ
    z = (z ⊕ (z ≫ 30)) · 0xBF58476D1CE4E5B9
    z = (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB
    h = z ⊕ (z ≫ 31)

(≫ a logical shift). With ``seed = 1`` this is the first output of ``splitmix64`` started at
state ``x``. The finaliser is a bijection of 64-bit words, so distinct ids never collide before
the final ``mod M``.

Why the tensor version is exact: torch's int64 ``+`` and ``*`` wrap modulo 2⁶⁴ (two's
complement), which is unsigned arithmetic modulo 2⁶⁴ read as signed; ``⊕`` is bitwise. Only
``>>`` differs: on int64 it is arithmetic (copies the sign bit), so the logical shift is
``(z >> s) & (2^(64-s) - 1)``, clearing the s copied bits.

>>> import torch
>>> mix64(torch.tensor([1234567]), seed=1).item()  # splitmix64(1234567), first output
6457827717110365317
>>> bucket(torch.tensor([-5, 0, 7]), seed=3, num_buckets=10).tolist()
[3, 9, 0]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
NULL_HASH = 0
"""The hash ``stable_string_hash`` gives a null: 0 (a string hashes to 0 with odds 2⁻⁶⁴)."""

_MASK64 = (1 << 64) - 1


def as_int64(value: int) -> int:
    """The signed int64 whose two's-complement bits are ``value mod 2⁶⁴``."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 words by ``s`` (``>>`` alone would copy the sign bit)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(x: Tensor, seed: int | Tensor) -> Tensor:
    """splitmix64 finaliser of ``x + seed·γ`` (module docstring), element-wise, mod 2⁶⁴.

    `seed` is a Python int (any size; taken mod 2⁶⁴) or an int64 tensor broadcastable
    against `x` (one seed per probe, say).

    Shape: x (*) → (*), or the broadcast shape of `x` and a tensor `seed`.
    """
    if x.dtype != torch.int64:
        raise TypeError(f"mix64 needs int64 ids, got {x.dtype=}")
    if isinstance(seed, Tensor):
        z = x + seed.to(torch.int64) * as_int64(GOLDEN)  # wraps mod 2⁶⁴
    else:
        z = x + as_int64(seed * GOLDEN)
    z = (z ^ _shr(z, 30)) * as_int64(MIX1)
    z = (z ^ _shr(z, 27)) * as_int64(MIX2)
    return z ^ _shr(z, 31)


def bucket(x: Tensor, seed: int | Tensor, num_buckets: int) -> Tensor:
    """``mix64(x, seed) mod num_buckets`` in ``[0, num_buckets)``, int64.

    The hash is read as a signed int64 and reduced with floor-modulo (Python's ``%``, torch's
    ``remainder``), which is non-negative for a positive modulus.

    Shape: as :func:`mix64`.
    """
    if num_buckets < 1:
        raise ValueError(f"{num_buckets=} must be at least 1")
    return torch.remainder(mix64(x, seed), num_buckets)


def _blake2b64(value: str | None) -> int:
    if value is None:
        return NULL_HASH
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def stable_string_hash(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> np.ndarray:
    """Strings → int64, identical in every process: BLAKE2b with an 8-byte digest.

    The digest's 8 bytes are read little-endian as a signed int64. Nulls map to
    ``NULL_HASH`` (0). Strings are hashed as given: callers that treat empty strings as
    missing normalise first (:func:`ranker.data.vocab.normalise`). The Python loop runs over
    the distinct values only (``pc.dictionary_encode``), then a gather spreads the hashes.

    Shape: (N,) → (N,) int64.

    >>> stable_string_hash(["a", None, "a"]).tolist()
    [3405396810240292928, 0, 3405396810240292928]
    """
    arr: pa.Array | pa.ChunkedArray
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    else:
        arr = pa.array(list(values), type=pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type):
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        raise TypeError(f"stable_string_hash needs strings, got {arr.type=}")
    encoded = pc.dictionary_encode(arr, null_encoding="encode")
    table = np.array([_blake2b64(v) for v in encoded.dictionary.to_pylist()], dtype=np.int64)
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return table[indices]
