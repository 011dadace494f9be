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


class Pending:
    """Outstanding requests of one exchange; wait() completes them all."""

    def __init__(self):
        self.works = []

    def wait(self):
        for w in self.works:
            w.wait()
        self.works = []


def send(tensor, dst, tag, group, phase, pending):
    t = tensor.contiguous()
    _sent[phase] += t.numel() * t.element_size()
    _messages[phase] += 1
    pending.works.append(dist().isend(t, _global(dst, group), group=group, tag=tag))
    return t  # keep it alive until the request completes


def recv(shape, dtype, device, src, tag, group, pending):
    import torch

    # poisoned: a message that did not fully arrive shows up as NaN, never as stale memory
    buf = torch.full(shape, float("nan"), dtype=dtype, device=device)
    pending.works.append(dist().irecv(buf, _global(src, group), group=group, tag=tag))
    return buf


def _global(rank, group):
    # isend/irecv take global ranks; the plans speak of ranks within the group
    if group is None:
        return rank
    d = dist()
    return d.get_global_rank(group, rank) if hasattr(d, "get_global_rank") else d.distributed_c10d._get_global_rank(group, rank)
