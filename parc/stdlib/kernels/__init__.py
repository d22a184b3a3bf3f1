"""Hand-written Triton kernels: layer and RMS norm, softmax cross-entropy over large
vocabularies (never materialising the softmax), rotary embeddings, and causal attention (flash
style, grouped-query aware: the seq x seq scores never reach memory).

Each kernel loads, converts to f32, computes and casts at the store, so f16 and bf16 inputs
work (and the Triton interpreter, which computes bf16 wrong, sees only f32 arithmetic); on a
GPU attention's dots take f16 and bf16 operands as they are, accumulating in f32. The
program id is widened to i64 before it is multiplied by a row stride: rows x row length passes
2^31 at LLM sizes (32k vocabulary x 64k tokens). The torch functions below wrap them in
autograd Functions.
"""

from .attention import causal_attention
from .cross_entropy import cross_entropy
from .norms import layer_norm, rms_norm
from .rope import rope

__all__ = ["causal_attention", "cross_entropy", "layer_norm", "rms_norm", "rope"]
