"""Which framework an array belongs to, and how to describe its dtype/device to the C++ core.

Everything here is cheap attribute inspection: it runs on every call.
"""

import numpy as np

_DTYPES = {
    "float32": "f32", "f32": "f32", "fp32": "f32",
    "float16": "f16", "f16": "f16", "fp16": "f16", "half": "f16",
    "bfloat16": "bf16", "bf16": "bf16",
}


def framework(x):
    """'numpy' | 'torch' | 'jax' | 'cupy' for a supported array; TypeError otherwise."""
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith(("jax", "jaxlib")):
        return "jax"
    if mod.startswith("cupy"):
        return "cupy"
    raise TypeError(
        f"splat: unsupported array type {type(x).__module__}.{type(x).__name__} "
        "(expected a NumPy, PyTorch, JAX or CuPy array)")


def dtype_name(dtype):
    """Canonical splat dtype name ('f32' | 'f16' | 'bf16') from a string or any framework's dtype."""
    if dtype is None:
        return "f32"
    s = dtype if isinstance(dtype, str) else str(getattr(dtype, "name", dtype))
    s = s.replace("torch.", "").replace("jnp.", "")
    if s in _DTYPES:
        return _DTYPES[s]
    raise ValueError(f"splat: unsupported dtype {dtype!r} (expected float32, float16 or bfloat16)")


def device_index(device):
    """-1 for CPU, else the CUDA ordinal, from 'cpu' | 'cuda' | 'cuda:N' | int | torch.device | jax device."""
    if device is None:
        return -1
    if isinstance(device, int):
        if device < -1:
            raise ValueError(f"splat: bad device {device}")
        return device
    platform = getattr(device, "platform", None)  # a jax Device
    if platform is not None:
        return -1 if platform == "cpu" else int(getattr(device, "id", 0))
    s = str(device)
    if s == "cpu":
        return -1
    if s == "cuda" or s == "gpu":
        return 0
    for prefix in ("cuda:", "gpu:"):
        if s.startswith(prefix) and s[len(prefix):].isdigit():
            return int(s[len(prefix):])
    raise ValueError(f"splat: bad device {device!r} (expected 'cpu', 'cuda', 'cuda:N' or an ordinal)")


def sizes(shape, layout):
    """(N, D) of an attention array of rank >= 3 in the given layout."""
    if len(shape) < 3:
        raise ValueError(f"splat: expected [B, H, N, D] (or [H, N, D]) arrays, got shape {tuple(shape)}")
    if layout == "bhnd":
        return int(shape[-2]), int(shape[-1])
    if layout == "bnhd":
        return int(shape[-3]), int(shape[-1])
    raise ValueError(f"splat: layout must be 'bhnd' or 'bnhd', got {layout!r}")


def layout_code(layout):
    """0 for 'bhnd', 1 for 'bnhd' (the C++ side's layout numbers)."""
    if layout == "bhnd":
        return 0
    if layout == "bnhd":
        return 1
    raise ValueError(f"splat: layout must be 'bhnd' or 'bnhd', got {layout!r}")


def causal_pattern(pattern):
    """pattern & causal, distributed over '+' (which binds looser than '&' in the spec language)."""
    if pattern is None:
        return "causal"
    return "+".join(term + "&causal" for term in pattern.split("+"))
