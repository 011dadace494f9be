"""splat: sparse-regular (SPLAT) and FLuRKA attention from a C++ core, for NumPy, PyTorch, JAX and CuPy.

    import splat
    out = splat.attention(q, k, v, pattern="dilated:w=256,d=4")         # plan built once, cached
    plan = splat.plan("dilated:w=256,d=4", seq_len=N, head_dim=D, dtype="bfloat16", device="cuda")
    out = splat.attention(q, k, v, plan)

Serving (KV-cache decode, packed varlen batches): splat.decode, splat.varlen_attention.
Which method for a shape (dense, a sparse pattern or FLuRKA, by the cost models): splat.recommend.
PyTorch ops and layers: splat.torch; JAX (jit/vmap via XLA FFI): splat.jax; transformers: splat.hf.
"""

from . import _core
from ._api import attention, cuda_available, dense_mask, reference
from ._flurka import flurka, flurka_decoder, flurka_methods
from ._plans import clear_plan_cache, plan
from ._recommend import recommend
from ._serving import decode, varlen_attention

Plan = _core.Plan
__version__ = "0.1.0"
built_with_cuda = _core.built_with_cuda

__all__ = ["attention", "flurka", "flurka_decoder", "flurka_methods", "plan", "Plan", "reference", "dense_mask",
           "cuda_available", "clear_plan_cache", "built_with_cuda", "__version__", "decode", "varlen_attention",
           "recommend"]
