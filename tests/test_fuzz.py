"""A learner fed over 1,000 hostile payloads on its gRPC streams keeps running, counts every one, runs no
peer-supplied code, and then updates on valid data exactly as a learner that never saw the junk."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import random
import threading
from pathlib import Path

import grpc
import torch
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.utils import grpc_channel_options, send_bytes_in_chunks, transitions_to_bytes

from lerobot_pirl.learner import PiRLLearner
from lerobot_pirl.runtime.interactions import encode_interaction
from lerobot_pirl.runtime.service import BroadcastLearnerService, start_server, stop_server
from tests.helpers import metaworld_run_config, synthetic_transitions
from tests.test_runtime_e2e import _free_port

CAP = 1 << 20  # the learner's message cap in this test (1 MiB)


class _RunsCode:
    """Unpickled with plain ``pickle``, this would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _valid(policy, n_chunks: int, seed: int) -> list[dict]:
    """Valid transitions of 2 MetaWorld envs (39-dim state) over ``n_chunks`` chunks of one episode each."""
    return synthetic_transitions(
        policy, n_envs=2, n_chunks=n_chunks, seed=seed, episode_len=n_chunks + 1, state_dim=39
    )


def _broken_transitions(template: dict, rng: random.Random) -> list[dict]:
    """Well-encoded transitions with bad content: each is rejected (and counted) or never usable."""
    import copy

    def variant(fn):
        tr = copy.deepcopy(template)
        fn(tr)
        return tr

    info = "complementary_info"
    return [
        variant(lambda t: t["state"].__setitem__("observation.state", torch.zeros(1, 10))),
        variant(lambda t: t["state"].__setitem__("observation.state", torch.full((1, 39), float("nan")))),
        variant(
            lambda t: t["next_state"].__setitem__("observation.state", torch.full((1, 39), float("inf")))
        ),
        variant(lambda t: t.__setitem__("reward", float("nan"))),
        variant(lambda t: t.__setitem__("reward", torch.ones(3))),
        variant(lambda t: t.pop("action")),
        variant(lambda t: t.__setitem__(info, [1, 2, 3])),
        variant(lambda t: t[info].pop("chain")),
        variant(lambda t: t[info].__setitem__("chain", torch.zeros(2, 2))),
        variant(lambda t: t[info].__setitem__("chain", t[info]["chain"] * float("inf"))),
        variant(lambda t: t[info].__setitem__("logprob", torch.tensor(float("nan")))),
        variant(lambda t: t[info].__setitem__("denoise_index", torch.tensor([1, 2]))),
        variant(lambda t: t[info].__setitem__("denoise_index", torch.tensor(999))),
        variant(lambda t: t[info].__setitem__("env_id", torch.arange(rng.randint(2, 5)))),
        variant(lambda t: t["state"].__setitem__("observation.state", "not a tensor")),
        variant(lambda t: t.__setitem__("state", 7)),
    ]


def _send(stub_call, payloads: list[bytes], message_cls) -> None:
    def chunks():
        for payload in payloads:
            yield from send_bytes_in_chunks(payload, message_cls)

    with contextlib.suppress(grpc.RpcError):
        stub_call(chunks(), timeout=30)


def _raw(stub_call, items: list[tuple[int, bytes]], message_cls) -> None:
    with contextlib.suppress(grpc.RpcError):
        stub_call(iter([message_cls(transfer_state=s, data=d) for s, d in items]), timeout=30)


def test_hostile_payloads_are_counted_run_no_code_and_leave_the_update_unchanged(tmp_path):
    torch.manual_seed(0)
    junk_learner = PiRLLearner(metaworld_run_config(tmp_path / "junk"), threading.Event())
    torch.manual_seed(0)
    clean_learner = PiRLLearner(metaworld_run_config(tmp_path / "clean"), threading.Event())
    for k, v in clean_learner.policy.state_dict().items():
        assert torch.equal(v, junk_learner.policy.state_dict()[k])

    shutdown = threading.Event()
    service = BroadcastLearnerService(
        junk_learner.board,
        max_message_bytes=CAP,
        shutdown_event=shutdown,
        transition_queue=junk_learner.transition_queue,
        interaction_message_queue=junk_learner.interaction_queue,
        queue_get_timeout=0.1,
    )
    junk_learner.service = service
    port = _free_port()
    server = start_server(service, "127.0.0.1", port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", grpc_channel_options())
    stub = services_pb2_grpc.LearnerServiceStub(channel)
    rng = random.Random(0)
    marker = tmp_path / "peer_code_ran"
    valid = _valid(junk_learner.policy, 32, seed=1)
    tr_msg, int_msg = services_pb2.Transition, services_pb2.InteractionMessage
    sent = {"transitions": 0, "interactions": 0, "refused": 0}
    try:
        # 400 random byte strings and 100 code-running pickles, as transition and interaction messages.
        noise = [rng.randbytes(rng.randint(1, 4000)) for _ in range(400)]
        evil = [pickle.dumps(_RunsCode(marker)) for _ in range(50)]
        evil_torch = []
        for _ in range(50):
            buf = io.BytesIO()
            torch.save([_RunsCode(marker)], buf)  # a torch.save file whose unpickling would run code
            evil_torch.append(buf.getvalue())
        _send(stub.SendTransitions, noise[:250] + evil + evil_torch, tr_msg)
        _send(stub.SendInteractions, noise[250:] + evil, int_msg)
        sent["transitions"] += 350
        sent["interactions"] += 200
        # Well-encoded transitions with bad content (every kind, many times), incl. policy versions the
        # learner never published or long stale.
        broken = []
        for i in range(20):
            broken += _broken_transitions(valid[i], rng)
        future, stale = dict(valid[0]), dict(valid[1])
        future["complementary_info"] = {**valid[0]["complementary_info"], "policy_version": 10**6}
        stale["complementary_info"] = {**valid[1]["complementary_info"], "policy_version": -50}
        _send(stub.SendTransitions, [transitions_to_bytes([tr]) for tr in broken], tr_msg)
        sent["transitions"] += len(broken)
        # JSON interactions with fields of the wrong type or range.
        bad_json = [
            {"env_steps": "many"},
            {"env_steps": -5},
            {"env_steps": 1.5},
            {"eval_success_rate": "high", "eval_episodes": 3},
            {"eval_success_rate": 7.0, "eval_episodes": 3},
            {"episodes": "x"},
            {"env_steps_per_s": float("inf")},
            {"time_s": {"env": -1.0}},
            {"time_s": {"rm -rf": 1.0}},
            {"time_s": [1.0]},
            [1, 2, 3],
            "a string",
        ]
        _send(stub.SendInteractions, [json.dumps(m).encode() for m in bad_json] * 12, int_msg)
        sent["interactions"] += len(bad_json) * 12
        # Chunks of unknown transfer state (dropping the message they interrupt; the learner sees one
        # undecodable message per 'end'), and streams that end mid-message (the partial message is dropped).
        for _ in range(25):
            _raw(
                stub.SendTransitions,
                [(2, b"mid"), (0, b"?"), (3, b"end"), (7, b"?"), (1, b"never-ended")],
                tr_msg,
            )
            sent["refused"] += 2
            sent["transitions"] += 1
        # Messages over the cap end their stream (RESOURCE_EXHAUSTED); counted once each.
        for _ in range(3):
            _send(stub.SendTransitions, [rng.randbytes(CAP + 10)], tr_msg)
            sent["refused"] += 1
        total_junk = sent["transitions"] + sent["interactions"] + sent["refused"] + 2
        assert total_junk >= 1000, total_junk

        junk_learner.drain()  # must not raise
        assert not marker.exists(), "decoding a peer's payload ran its code"
        counted = sum(junk_learner.buffer.rejected.values())
        assert counted == sent["transitions"] + sent["interactions"], dict(junk_learner.buffer.rejected)
        assert sum(service.refused.values()) == sent["refused"], dict(service.refused)
        assert junk_learner.env_steps == 0 and junk_learner.buffer.num_usable(0, 1) == 0

        # The same valid data (and the two out-of-range versions) to both learners: identical updates.
        payloads = [transitions_to_bytes([future, stale])] + [
            transitions_to_bytes(valid[i : i + 8]) for i in range(0, len(valid), 8)
        ]
        _send(stub.SendTransitions, payloads, tr_msg)
        for p in payloads:
            clean_learner.transition_queue.put(p)
        for learner in (junk_learner, clean_learner):
            learner.interaction_queue.put(encode_interaction({"env_steps": 640, "actor_id": 1}))
            learner.drain()
            assert learner.maybe_update()
    finally:
        shutdown.set()
        channel.close()
        stop_server(server)
    assert junk_learner.env_steps == clean_learner.env_steps == 640
    for key, value in clean_learner.policy.state_dict().items():
        assert torch.equal(junk_learner.policy.state_dict()[key], value), f"junk changed the update ({key})"
    records = [
        json.loads(line) for line in (Path(junk_learner.out) / "metrics.jsonl").read_text().splitlines()
    ]
    assert records[-1]["messages_refused"] == sent["refused"]
    assert records[-1]["transitions_used"] == len(valid) and records[-1]["transitions_dropped"] == 2


def test_an_actor_over_its_transition_rate_is_dropped_and_counted(tmp_path):
    from lerobot_pirl.runtime.security import RateLimit

    now = [0.0]
    limit = RateLimit(2.0, burst_s=10.0, clock=lambda: now[0])  # 2 per second, 20 saved up
    assert limit.allow("a", 20) and not limit.allow("a", 1) and limit.allow("b", 5)
    now[0] = 3.0
    assert limit.allow("a", 6) and not limit.allow("a", 1)

    learner = PiRLLearner(
        metaworld_run_config(tmp_path, ["--policy.transport.max_transitions_per_s=1"]), threading.Event()
    )
    valid = _valid(learner.policy, 8, seed=0)  # 16 transitions of actor 1; the bucket holds 10
    learner.transition_queue.put(transitions_to_bytes(valid[:8]))
    learner.transition_queue.put(transitions_to_bytes(valid[8:]))
    learner.drain()
    assert learner.buffer.num_usable(0, 1) == 8
    assert learner.buffer.rejected["over policy.transport.max_transitions_per_s"] == 8
