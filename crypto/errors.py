"""Exceptions of flchain.crypto.

All of them are `ValueError`s: each one means the caller passed something that cannot be used
(bad parameters, a value out of range, a ciphertext under another key), and the message says
which, so nothing is ever silently wrapped, clipped or misread.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class of every error raised by flchain.crypto."""


class DPError(CryptoError):
    """Invalid differential-privacy parameters or a non-finite update."""


class QuantizationError(CryptoError):
    """A value cannot be quantized: out of the declared range (without clip=True) or not finite."""


class PaillierError(CryptoError):
    """A Paillier operation was refused: mismatched key/spec, bad ciphertext, failed check."""


class PackingOverflowError(PaillierError):
    """A sum would need more headroom than the packing spec reserved (more than N members)."""


class MaskingError(CryptoError):
    """Invalid pairwise-masking input: bad key, unknown member, member set too small."""
