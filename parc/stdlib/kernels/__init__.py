"""Hand-written Triton kernels for the row-wise ops: layer and RMS norm, softmax cross-entropy
over large vocabularies (never materialising the softmax), and rotary embeddings.

Each kernel loads, converts to f32, computes and casts at the store, so f16 and bf16 inputs
work (and the Triton interpreter, which computes bf16 wrong, sees only f32 arithmetic). The
program id is widened to i64 before it is multiplied by a row stride: rows x row length passes
2^31 at LLM sizes (32k vocabulary x 64k tokens). The torch functions below wrap them in
autograd Functions.
"""

from .cross_entropy import cross_entropy
from .norms import layer_norm, rms_norm
from .rope import rope

__all__ = ["cross_entropy", "layer_norm", "rms_norm", "rope"]
