"""flchain.crypto: the privacy layer of a node.

- `flchain.crypto.dp`: clip + Gaussian noise, and the (epsilon, delta) accountant.
- `flchain.crypto.paillier`: packed Paillier encryption, homomorphic sums, verifiable
  decryption (with `quantize`, `packing`, `obfuscators` and `ciphertext` underneath).
- `flchain.crypto.masking`: pairwise X25519/HKDF/ChaCha20 masks that cancel in the sum.
- `flchain.crypto.secure_sum`: one secure-aggregation round end to end (`secure_fedavg`).

The submodules are imported on demand (`from flchain.crypto import paillier`): the accountant
pulls in scipy and the CLI should not pay for what it does not use. Every error is a
`CryptoError`, itself a `ValueError`.
"""

from flchain.crypto.errors import (
    CryptoError,
    DPError,
    MaskingError,
    PackingOverflowError,
    PaillierError,
    QuantizationError,
)

__all__ = [
    "CryptoError",
    "DPError",
    "MaskingError",
    "PackingOverflowError",
    "PaillierError",
    "QuantizationError",
]
