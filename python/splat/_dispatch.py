"""Which framework an array belongs to, and how to describe its dtype/device to the C++ core.

Everything here is cheap attribute inspection: it runs on every call.
"""

import numpy as np

_DTYPES = {
    "float32": "f32", "f32": "f32", "fp32": "f32",
    "float16": "f16", "f16": "f16", "fp16": "f16", "half": "f16",
    "bfloat16": "bf16", "bf16": "bf16",
    "float64": "f64", "f64": "f64", "fp64": "f64", "double": "f64",
}
MAX_THREADS = 4096  # as the command-line tool


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
    """Canonical splat dtype name ('f32' | 'f16' | 'bf16' | 'f64') from a string or any framework's dtype."""
    if dtype is None:
        return "f32"
    s = dtype if isinstance(dtype, str) else str(getattr(dtype, "name", dtype))
    s = s.replace("torch.", "").replace("jnp.", "")
    if s in _DTYPES:
        return _DTYPES[s]
    raise ValueError(f"splat: unsupported dtype {dtype!r} (expected float32, float16, bfloat16 or float64)")


def check_dtypes(**arrays):
    """ValueError unless every given array (None entries skipped) has the first one's dtype. 16-bit arrays reach C++
    as raw bits (NumPy has no DLPack bfloat16), so a float16 or uint16 array next to a bfloat16 one must be
    refused here, not reinterpreted."""
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        if first is None:
            first = (name, a.dtype)
        elif a.dtype != first[1]:
            raise ValueError(f"splat: {name} has dtype {a.dtype} but {first[0]} has {first[1]}; "
                            "all arrays of one call must share a dtype")


def check_threads(threads):
    """threads as an int in [0, MAX_THREADS] (0 = all hardware threads)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"splat: threads must be an integer, got {type(threads).__name__}")
    if not 0 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"splat: threads must be in [0, {MAX_THREADS}] (0 = all hardware threads), got {threads}")
    return int(threads)


def size_arg(x, name):
    """A size argument as an int: integers only (64.7 or '64' are errors, never truncated)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"splat: {name} must be an integer, got {x!r}")
    return int(x)


def check_cuda_dtype(dtype, device):
    """The CUDA kernels run float16 and bfloat16: say so before building a plan for anything else."""
    if device >= 0 and dtype in ("f32", "f64"):
        raise NotImplementedError(f"splat: the CUDA kernels run float16 and bfloat16, not {dtype}; "
                                  "float32 and float64 run on the CPU")


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


def intersect(pattern, other):
    """The spec of pattern & other for any spec (parenthesised: '+' binds looser than '&')."""
    return other if pattern is None else f"({pattern})&{other}"


def causal_pattern(pattern):
    """pattern & causal: what a causal model may see, whatever the pattern says (None: causal)."""
    return intersect(pattern, "causal")
