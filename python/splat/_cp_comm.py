"""Point-to-point messages for context parallelism, through torch.distributed (imported lazily), with byte counters.

Every message goes through send() / recv() here so that the bytes actually handed to the process group are
counted (per phase: "forward" / "backward"); the tests compare the counts with the communication model.
Messages between one pair of ranks are told apart by tags, so several exchanges may be in flight at once.
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

    def send(self, tensor, dst, tag):
        d = dist()
        t = tensor.contiguous()
        _sent[self.phase] += t.numel() * t.element_size()
        _messages[self.phase] += 1
        self.keep.append(t)  # alive until the request completes
        self.ops.append(d.P2POp(d.isend, t, _global(dst, self.group), self.group, tag))

    def recv(self, shape, dtype, device, src, tag):
        """A buffer that holds the message once wait(index) returned; index = the returned second value."""
        import torch

        d = dist()
        # poisoned: a message that did not fully arrive shows up as NaN, never as stale memory
        buf = torch.full(shape, float("nan"), dtype=dtype, device=device)
        self.ops.append(d.P2POp(d.irecv, buf, _global(src, self.group), self.group, tag))
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
            return
        for i, w in enumerate(self.works):
            if w is not None:
                w.wait()
                self.works[i] = None


def _global(rank, group):
    # isend/irecv take global ranks; the plans speak of ranks within the group
    if group is None:
        return rank
    d = dist()
    if hasattr(d, "get_global_rank"):
        return d.get_global_rank(group, rank)
    return d.distributed_c10d._get_global_rank(group, rank)
