"""Point-to-point messages for context parallelism, through torch.distributed (imported lazily), with byte counters.

Every message goes through send() / recv() here so that the bytes actually handed to the process group are
counted (per phase: "forward" / "backward"); the tests compare the counts with the communication model.
Messages between one pair of ranks are told apart by tags, so several exchanges may be in flight at once. With the
gloo backend, device (CUDA) tensors travel through host copies (gloo's send/recv take CPU tensors only): several
ranks can then share one GPU, which NCCL refuses.
"""

import collections

# tags of the message kinds (one message per kind and ordered pair of ranks and call)
KV, GQ, GO, GL, DKV, GDO, GDL, GDQ = range(1, 9)

_sent = collections.Counter()
_messages = collections.Counter()


def dist():
    try:
        import torch.distributed as d
    except ImportError as e:  # pragma: no cover - torch builds without distributed support
        raise RuntimeError("splat.distributed needs torch.distributed") from e
    if not d.is_available():
        raise RuntimeError("splat.distributed needs torch.distributed (this torch build has none)")
    return d


def comm_stats():
    """Bytes and messages sent by this process so far: {"forward": bytes, "backward": bytes, ...}."""
    return {"bytes": dict(_sent), "messages": dict(_messages)}


def reset_comm_stats():
    _sent.clear()
    _messages.clear()


class Batch:
    """Point-to-point messages started together (torch.distributed.batch_isend_irecv: one NCCL group, so two
    ranks that send to each other cannot deadlock; gloo gets one request per message).

    Every rank starts its batches in the same order (the plans fix it), which is how NCCL matches messages
    between one pair of ranks (it ignores tags); a rank with nothing to send or receive skips the call."""

    def __init__(self, group, phase):
        self.group, self.phase, self.ops, self.works, self.keep = group, phase, [], None, []
        self.staged = {}  # op index -> (device buffer, host buffer): receives staged through the host

    def _host(self, device):
        """Whether device tensors go through host memory: gloo moves CPU tensors only for send/recv."""
        return device.type != "cpu" and dist().get_backend(self.group) == "gloo"

    def send(self, tensor, dst, tag):
        d = dist()
        t = tensor.contiguous()
        _sent[self.phase] += t.numel() * t.element_size()
        _messages[self.phase] += 1
        if self._host(t.device):
            t = t.cpu()
        self.keep.append(t)  # alive until the request completes
        self.ops.append(d.P2POp(d.isend, t, _global(dst, self.group), self.group, tag))

    def recv(self, shape, dtype, device, src, tag):
        """A buffer that holds the message once wait(index) returned; index = the returned second value."""
        import torch

        d = dist()
        # poisoned: a message that did not fully arrive shows up as NaN, never as stale memory
        buf = torch.full(shape, float("nan"), dtype=dtype, device=device)
        post = buf
        if self._host(buf.device):
            post = torch.full(shape, float("nan"), dtype=dtype)
            self.staged[len(self.ops)] = (buf, post)
        self.ops.append(d.P2POp(d.irecv, post, _global(src, self.group), self.group, tag))
        return buf, len(self.ops) - 1

    def start(self):
        self.works = dist().batch_isend_irecv(self.ops) if self.ops else []
        return self

    def wait(self, index=None):
        """Completes message `index` (every message when None, or when the backend returned one request)."""
        if index is not None and len(self.works) == len(self.ops):
            w = self.works[index]
            if w is not None:
                w.wait()
                self.works[index] = None
            self._unstage([index])
            return
        for i, w in enumerate(self.works):
            if w is not None:
                w.wait()
                self.works[i] = None
        self._unstage(list(self.staged))

    def _unstage(self, indices):
        for i in indices:
            if i in self.staged:
                buf, host = self.staged.pop(i)
                buf.copy_(host)


def _global(rank, group):
    # isend/irecv take global ranks; the plans speak of ranks within the group
    if group is None:
        return rank
    d = dist()
    if hasattr(d, "get_global_rank"):
        return d.get_global_rank(group, rank)
    return d.distributed_c10d._get_global_rank(group, rank)


def _staged(group, tensor):
    """Whether a collective on this device tensor goes through a host copy (gloo: CPU tensors for reduce, and so
    for broadcast too, to keep one rule)."""
    return tensor.device.type != "cpu" and dist().get_backend(group) == "gloo"


class _HostRequest:
    """A collective's request on a host copy: wait() completes it and copies the result back to the device tensor."""

    def __init__(self, req, host, tensor):
        self.req, self.host, self.tensor = req, host, tensor

    def wait(self):
        if self.req is not None:
            self.req.wait()
            self.tensor.copy_(self.host)
            self.req = None
        return True


def _collective(op, tensor, group):
    if _staged(group, tensor):
        host = tensor.to("cpu", copy=True)
        return _HostRequest(op(host), host, tensor)
    return op(tensor)


def broadcast(tensor, src, group, phase, owner):
    """tensor (contiguous) from group rank src to every rank (async; returns the request). The owner's bytes are
    counted."""
    if owner:
        _sent[phase] += tensor.numel() * tensor.element_size()
        _messages[phase] += 1
    d = dist()
    return _collective(lambda t: d.broadcast(t, _global(src, group), group=group, async_op=True), tensor, group)


def reduce_sum(tensor, dst, group, phase):
    """The sum of every rank's tensor into group rank dst's: (the tensor that holds it at dst once the request
    completed, the request). Every rank's bytes count."""
    d = dist()
    tensor = tensor.contiguous()  # the collectives read and write plain memory
    _sent[phase] += tensor.numel() * tensor.element_size()
    _messages[phase] += 1
    req = _collective(lambda t: d.reduce(t, _global(dst, group), op=d.ReduceOp.SUM, group=group, async_op=True),
                      tensor, group)
    return tensor, req


def all_reduce_max(tensor, group, phase):
    """The elementwise maximum over every rank's tensor, on every rank: (the tensor that holds it once the request
    completed, the request). Every rank's bytes count."""
    d = dist()
    tensor = tensor.contiguous()
    _sent[phase] += tensor.numel() * tensor.element_size()
    _messages[phase] += 1
    return tensor, _collective(lambda t: d.all_reduce(t, op=d.ReduceOp.MAX, group=group, async_op=True), tensor, group)
