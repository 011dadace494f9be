"""Context parallelism in JAX: banded attention over a sequence sharded along a mesh axis, under jax.shard_map.

    mesh = jax.make_mesh((4,), ("sp",))
    out = splat._cp_jax.attention(q, k, v, "causal_window:w=256", mesh=mesh, axis_name="sp")   # q [B, H, N, D]

Each device holds N / R rows of q, k, v. The pattern must be shift-invariant with a finite reach (window,
causal_window, dilated, causal_dilated, their unions and intersections, with causal too) no wider than one shard:
its left and right reach (from splat's ACSR) give the halos, which jax.lax.ppermute moves between neighbours.
Per device three splat calls, merged by their log-sum-exp: own queries x own keys (the pattern itself), the first
`left` queries x the left halo and the last `right` queries x the right halo (each a square block by its mask,
the same on every device; the edge devices drop theirs). Differentiable: the backward of each block runs with the
merged out and lse (so each block's P is its share of the merged softmax), and JAX transposes the ppermutes, which
sends the halos' key gradients back to their owners. Forward and backward of the local calls are splat's XLA FFI
handlers (CPU and CUDA), as in splat.jax.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _cp_geometry as geo
from . import jax as sj
from ._plans import register_mask

__all__ = ["attention", "halo_reach"]


def halo_reach(pattern, n, world):
    """(left, right): the halo rows a shard of n / world rows needs from each neighbour; ValueError when the
    pattern is not a shift-invariant band or its reach exceeds one shard."""
    if not isinstance(pattern, str):
        raise TypeError("splat: the JAX sharded attention takes a spec string")
    if n % world:
        raise ValueError(f"splat: seq_len {n} must be divisible by the {world} devices of the mesh axis")
    node = geo.parse(pattern)
    if not all(leaf[0] in geo.SHIFT_INVARIANT for leaf in geo.leaves(node)):
        raise ValueError(f"splat: {pattern!r} is not a shift-invariant band (window, causal_window, dilated, ...); "
                         "the JAX sharded attention exchanges halos only")
    r = geo.core(pattern, n).reach(0, n, 0, n)
    left, right = (max(0, r[0]), max(0, r[1])) if r else (0, 0)
    s = n // world
    if world > 1 and max(left, right) > s:
        raise ValueError(f"splat: {pattern!r} reaches {max(left, right)} rows, more than a shard of {s} rows: "
                         "use fewer devices on the axis")
    return left, right


def attention(q, k, v, pattern, *, mesh, axis_name, scale=None):
    """Sequence-sharded banded attention. q [B, H, N, D], k, v [B, Hk, N, D] (Hk divides H), sharded (or to be
    sharded) along N over mesh axis axis_name; the result is sharded alike. Differentiable in q, k, v."""
    world = mesh.shape[axis_name]
    n = q.shape[2]
    left, right = halo_reach(pattern, n, world)
    s = n // world
    if world == 1:
        left = right = 0
    ext = geo.core(pattern, s + left + right) if left or right else None
    # the halo blocks' masks in block coordinates, the same on every device (the pattern is shift-invariant)
    lmask = register_mask(ext.mask(left, 2 * left, 0, left).astype(bool)) if left else None
    rmask = register_mask(ext.mask(left + s - right, left + s, left + s, left + s + right).astype(bool)) \
        if right else None
    specs = (pattern, lmask, rmask)
    sc = 0.0 if scale is None else float(scale)
    spec = jax.sharding.PartitionSpec(None, None, axis_name, None)

    def local(ql, kl, vl):
        idx = jax.lax.axis_index(axis_name)
        kv = jnp.stack([kl, vl])
        zero = jnp.zeros((2,) + kl.shape[:2] + (0,) + kl.shape[3:], kl.dtype)
        halo_l = jax.lax.ppermute(kv[..., s - left:, :], axis_name, [(i, i + 1) for i in range(world - 1)]) \
            if left else zero
        halo_r = jax.lax.ppermute(kv[..., :right, :], axis_name, [(i + 1, i) for i in range(world - 1)]) \
            if right else zero
        valid = jnp.stack([idx > 0, idx < world - 1]).astype(jnp.float32)
        return _banded(ql, kl, vl, halo_l[0], halo_l[1], halo_r[0], halo_r[1], valid, specs, sc)

    f = _shard_map(local, mesh, (spec, spec, spec), spec)
    types = dict(zip(mesh.axis_names, getattr(mesh, "axis_types", ())))
    if str(types.get(axis_name, "")).endswith("Explicit"):  # explicit axes: shard_map takes the inputs as sharded
        q, k, v = (jax.reshard(x, jax.sharding.NamedSharding(mesh, spec)) for x in (q, k, v))
    return f(q, k, v)


def _shard_map(f, mesh, in_specs, out_specs):
    # the FFI calls' results carry no varying-axis type: not checked (every value here varies along the axis)
    sm = getattr(jax, "shard_map", None)
    if sm is not None:
        try:
            return sm(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
        except TypeError:  # releases that call the check check_rep
            return sm(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


# ---- the local calls: splat's XLA FFI handlers with the lse, and the backward with a given lse ----

def _plan(spec, q):
    p = sj._plan_for(None, spec, q, "bhnd")
    pid = p._register()
    sj._plans_by_id[pid] = p
    return p, pid


def _fwd_lse(q, k, v, spec, scale):
    sj._register()
    p, pid = _plan(spec, q)
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32),
               jax.ShapeDtypeStruct((sj._workspace_bytes(p, q, "bhnd"),), jnp.uint8))
    call = jax.ffi.ffi_call(sj._LSE_TARGET, results, vmap_method="broadcast_all")
    out, lse, _ = call(q, k, v, plan_id=np.int64(pid), layout=np.int64(0), scale=np.float32(scale))
    return out, lse


def _bwd(q, k, v, out, lse, dout, own_lse, spec, scale):
    """dq, dk, dv of one block given the merged out and lse of its rows (and the block's own lse)."""
    p, pid = _plan(spec, q)
    if q.dtype == jnp.float64:  # the CPU float64 backward recomputes the block's own lse: scale dout instead
        c = jnp.nan_to_num(jnp.exp(own_lse.astype(jnp.float64) - lse.astype(jnp.float64)), nan=0.0)
        dout, lse = dout * c[..., None], own_lse
    lse = jnp.where(jnp.isneginf(lse), 0.0, lse)  # rows without keys: out = 0, no key to move
    n = q.shape[-2]
    nbytes = 1 if p.device < 0 else max(1, int(sj._core.backward_workspace_bytes(p, q.size // (n * q.shape[-1]), 1,
                                                                                  p.device, True)))
    results = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
               jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((nbytes,), jnp.uint8))
    call = jax.ffi.ffi_call(sj._BWD_TARGET, results, vmap_method="broadcast_all")
    dq, dk, dv, _ = call(q, k, v, out, lse, dout.astype(q.dtype), plan_id=np.int64(pid), layout=np.int64(0),
                         scale=np.float32(scale), deterministic=np.int64(1))
    return dq, dk, dv


def _blocks(q, k, v, kl, vl, kr, vr, specs):
    """(queries rows slice, q rows, keys, values, spec, which halo) of the device's blocks."""
    s, left, right = q.shape[-2], kl.shape[-2], kr.shape[-2]
    out = [(slice(0, s), q, k, v, specs[0], None)]
    if left:
        out.append((slice(0, left), q[..., :left, :], kl, vl, specs[1], 0))
    if right:
        out.append((slice(s - right, s), q[..., s - right:, :], kr, vr, specs[2], 1))
    return out


def _merged(q, k, v, kl, vl, kr, vr, valid, specs, scale):
    shape = q.shape[:-1]
    parts, lse = [], jnp.full(shape, -jnp.inf, jnp.float32)
    for rows, qb, kb, vb, spec, halo in _blocks(q, k, v, kl, vl, kr, vr, specs):
        o, l = _fwd_lse(qb, kb, vb, spec, scale)
        if halo is not None:  # the edge devices have no neighbour there: the block drops out of the merge
            l = jnp.where(valid[halo] > 0, l, -jnp.inf)
        lf = jnp.full(shape, -jnp.inf, jnp.float32).at[..., rows].set(l)
        parts.append((rows, o, lf, l))
        lse = jnp.logaddexp(lse, lf)
    out = jnp.zeros(q.shape, jnp.float32)
    for rows, o, lf, _ in parts:
        w = jnp.nan_to_num(jnp.exp(lf - lse), nan=0.0)[..., rows, None]
        out = out.at[..., rows, :].add(w * o.astype(jnp.float32))
    return out.astype(q.dtype), lse, [p[3] for p in parts]


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _banded(q, k, v, kl, vl, kr, vr, valid, specs, scale):
    return _merged(q, k, v, kl, vl, kr, vr, valid, specs, scale)[0]


def _banded_fwd(q, k, v, kl, vl, kr, vr, valid, specs, scale):
    out, lse, own = _merged(q, k, v, kl, vl, kr, vr, valid, specs, scale)
    return out, (q, k, v, kl, vl, kr, vr, valid, out, lse, own)


def _banded_bwd(specs, scale, res, dout):
    q, k, v, kl, vl, kr, vr, valid, out, lse, own = res
    grads = {"q": jnp.zeros(q.shape, jnp.float32)}
    for (rows, qb, kb, vb, spec, halo), ol in zip(_blocks(q, k, v, kl, vl, kr, vr, specs), own):
        d = dout[..., rows, :]
        if halo is not None:  # a dropped block gives no gradient
            d = d * valid[halo].astype(d.dtype)
        dq, dk, dv = _bwd(qb, kb, vb, out[..., rows, :], lse[..., rows], d, ol, spec, scale)
        grads["q"] = grads["q"].at[..., rows, :].add(dq.astype(jnp.float32))
        grads[halo] = (dk, dv)
    zl = (jnp.zeros_like(kl), jnp.zeros_like(vl))
    dkl, dvl = grads.get(0, zl)
    dkr, dvr = grads.get(1, (jnp.zeros_like(kr), jnp.zeros_like(vr)))
    return (grads["q"].astype(q.dtype), grads[None][0], grads[None][1], dkl, dvl, dkr, dvr, jnp.zeros_like(valid))


_banded.defvjp(_banded_fwd, _banded_bwd)
