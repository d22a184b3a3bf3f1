"""When the executor waits for its p2p groups: a group that receives at once, after every group
before it (one NCCL stream completes them in order); a group of sends alone not until then, so
the rank computes while its message waits for the receiver (zero-bubble's W fills the bubble
only so)."""

from types import SimpleNamespace

import torch
import torch.distributed as dist

from parc.runtime import executor as executor_module
from parc.runtime.executor import Executor


class _Work:
    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def wait(self) -> None:
        self.log.append(self.name)


def _executor() -> Executor:
    ex = object.__new__(Executor)
    ex.mesh = SimpleNamespace(rank=0, rank_at=lambda pp: pp)
    ex.pp = 0
    ex.stage_rank = [0, 1]
    spec = [{"shape": [2], "dtype": "f32"}]
    ex.stages = {0: {"live_in": [], "live_out": spec}, 1: {"live_in": spec, "live_out": []}}
    ex.buffers = {}
    ex.device = torch.device("cpu")
    ex.steps = []
    return ex


def test_a_group_of_sends_alone_is_left_in_flight_until_a_receive(monkeypatch):
    log: list[str] = []
    posted: list[str] = []

    def batch(ops):
        posted.extend(f"{op.op} {len(posted)}" for op in ops)
        return [_Work(log, name) for name in posted[-len(ops):]]

    monkeypatch.setattr(dist, "P2POp", lambda op, t, peer, tag: SimpleNamespace(
        op="send" if op is dist.isend else "recv", peer=peer))
    monkeypatch.setattr(executor_module.dist, "batch_isend_irecv", batch)
    ex = _executor()
    outbox = {("act", 0, 1, 0): [torch.ones(2)], ("act", 0, 1, 1): [torch.ones(2)]}
    inbox: dict = {}
    in_flight: list = []
    ex._post(0, [("send", "act", 0, 1, 0)], outbox, inbox, in_flight)
    ex._post(1, [("send", "act", 0, 1, 1)], outbox, inbox, in_flight)
    assert log == [] and len(in_flight) == 2  # the rank goes on computing
    ex._post(2, [("recv", "grad", 1, 0, 0)], outbox, inbox, in_flight)
    assert log == ["send 0", "send 1", "recv 2"]  # in posting order, the receive last
    assert in_flight == [] and ("grad", 1, 0, 0) in inbox
    outbox[("act", 0, 1, 2)] = [torch.ones(2)]
    ex._post(3, [("send", "act", 0, 1, 2)], outbox, inbox, in_flight)
    assert len(log) == 3
    ex._wait(in_flight)  # the end of the step waits for what is still in flight
    assert log[3:] == ["send 3"] and in_flight == []
