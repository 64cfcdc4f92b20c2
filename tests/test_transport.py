"""πRL payloads through LeRobot's transport utilities, and the parameter broadcast."""

from __future__ import annotations

import threading

import pytest
import torch
from lerobot.transport import services_pb2
from lerobot.transport.utils import (
    CHUNK_SIZE,
    bytes_to_state_dict,
    bytes_to_transitions,
    receive_bytes_in_chunks,
    send_bytes_in_chunks,
    state_to_bytes,
    transitions_to_bytes,
)

from lerobot_pirl.runtime.interactions import EpisodeLog, decode_interaction, encode_interaction
from lerobot_pirl.runtime.service import BroadcastLearnerService, WeightsBoard
from lerobot_pirl.transition_keys import REQUIRED_INFO_KEYS
from tests.helpers import synthetic_transitions, tiny_pi_rl


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_pi_rl_transitions_round_trip_through_lerobot_transport():
    policy = tiny_pi_rl("flow_noise", logprob_level="token")
    transitions = synthetic_transitions(policy, n_envs=3, n_chunks=2)
    assert all(k in transitions[0]["complementary_info"] for k in REQUIRED_INFO_KEYS)
    back = bytes_to_transitions(transitions_to_bytes(transitions))  # torch.load(weights_only=True)
    assert len(back) == len(transitions)
    for a, b in zip(transitions, back, strict=True):
        assert _equal(dict(a), dict(b))


def test_parameter_push_larger_than_the_chunk_size_round_trips_in_chunks():
    weights = {"big": torch.randn(3 * CHUNK_SIZE // 4 + 123), "version": torch.tensor(7)}
    payload = state_to_bytes(weights)
    assert len(payload) > 2 * CHUNK_SIZE
    messages = list(send_bytes_in_chunks(payload, services_pb2.Parameters))
    assert len(messages) >= 3
    received = receive_bytes_in_chunks(iter(messages), None, threading.Event())
    assert _equal(bytes_to_state_dict(received), weights)


class _Context:
    def __init__(self):
        self.active = True

    def is_active(self):
        return self.active


def _broadcast_service() -> tuple[WeightsBoard, threading.Event, BroadcastLearnerService]:
    board, shutdown = WeightsBoard(), threading.Event()
    service = BroadcastLearnerService(
        board,
        shutdown_event=shutdown,
        transition_queue=None,
        interaction_message_queue=None,
        queue_get_timeout=0.05,
    )
    return board, shutdown, service


def test_every_subscriber_receives_every_weights_publication():
    board, shutdown, service = _broadcast_service()
    streams = [service.StreamParameters(None, _Context()) for _ in range(2)]
    received: list[list[int]] = [[], []]

    def consume(i):
        for msg in streams[i]:
            if msg.transfer_state == services_pb2.TransferState.TRANSFER_END:
                received[i].append(int(bytes_to_state_dict(msg.data)["v"]))
            if len(received[i]) == 3:
                return

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert not board.republish()  # nothing to send again yet
    for v in range(2):
        board.publish(v, state_to_bytes({"v": torch.tensor(v)}))
        threading.Event().wait(0.2)
    assert board.republish()  # the same version again (a learner starved of transitions)
    for t in threads:
        t.join(timeout=5)
    shutdown.set()
    assert received == [[0, 1, 1], [0, 1, 1]]


def test_interaction_messages_are_json_and_never_unpickled():
    import pickle

    msg = {"env_steps": 10, "episodes": [{"return": 1.0, "success": 1.0, "length": 40}]}
    assert decode_interaction(encode_interaction(msg)) == msg
    assert decode_interaction(pickle.dumps(msg)) is None
    assert decode_interaction(b"[1, 2]") is None
    log = EpisodeLog()
    log.add(msg["episodes"] + [{"return": "x"}, "junk"])
    assert log.summary()["episodes"] == 1.0


def test_a_finished_learner_waits_until_every_stream_sent_its_final_weights():
    """A publication counts as delivered to a stream once gRPC asks that stream for its next message."""
    board, shutdown, service = _broadcast_service()
    stream = service.StreamParameters(None, _Context())

    def read() -> threading.Thread:  # gRPC pulling the stream's next message
        thread = threading.Thread(target=lambda: next(stream, None), daemon=True)
        thread.start()
        return thread

    first = read()  # the stream subscribes, then waits for weights
    board.publish(0, state_to_bytes({"v": torch.tensor(0)}))
    first.join(timeout=5)
    assert not board.wait_delivered(timeout=0.2)  # handed to gRPC, not yet sent
    second = read()
    assert board.wait_delivered(timeout=5)
    board.publish(1, state_to_bytes({"v": torch.tensor(1)}))  # the final weights
    second.join(timeout=5)
    assert not board.wait_delivered(timeout=0.2)
    third = read()
    assert board.wait_delivered(timeout=5)
    shutdown.set()  # the stream ends and no longer counts
    third.join(timeout=5)
    board.publish(2, b"x")
    assert board.wait_delivered(timeout=1)


def test_a_reconnect_attempt_is_one_log_line_and_the_guard_gives_up(caplog):
    import grpc

    from lerobot_pirl.runtime.streams import StreamGuard, rpc_problem

    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1:\nConnection refused"

    def stream():
        raise Refused()

    assert (
        rpc_problem(Refused())
        == "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1:"
    )
    shutdown = threading.Event()
    guard = StreamGuard(shutdown, max_attempts=2)
    with caplog.at_level("WARNING", logger="lerobot_pirl.runtime.streams"):
        import lerobot_pirl.runtime.streams as streams

        original = streams.random.random
        streams.random.random = lambda: 0.0  # shortest back-off
        try:
            guard.run("parameters", stream)
        finally:
            streams.random.random = original
    assert guard.gave_up and shutdown.is_set()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert "reconnecting" in lines[0] and "UNAVAILABLE" in lines[0] and "unreachable" in lines[-1]


def _packed_step(policy, n_envs: int = 3, task: bool = False):
    """One actor step of ``n_envs`` envs as chunk_message's inputs (env 1 intervened, 2 steps ran)."""
    from tests.helpers import obs_batch

    g = torch.Generator().manual_seed(3)
    state = obs_batch(n_envs, seed=3)
    if task:
        state["task"] = [f"task {i}" for i in range(n_envs)]
    sample = policy.sample_chain({k: v for k, v in state.items() if k != "task"}, generator=g)
    args = (state, state, sample.executed, torch.randn(n_envs, generator=g))
    args += (torch.tensor([True, False, False]), torch.tensor([False, True, False]), sample)
    kwargs = dict(
        policy_version=4,
        actor_id=9,
        env_ids=torch.arange(n_envs),
        episode_ids=torch.tensor([2, 0, 1]),
        chunk_indices=torch.tensor([5, 6, 7]),
        episode_chunks=torch.tensor([1, 2, 3]),
        success=torch.tensor([1.0, 0.0, 0.0]),
        intervention=torch.tensor([False, True, False]),
        steps=torch.tensor([5, 2, 5]),
    )
    return args, kwargs, sample


def test_a_packed_step_decodes_into_the_per_env_transitions_it_stands_for():
    """One packed Transition per actor step through LeRobot's transport: the learner gets each env's
    transition with the same fields, types and values as per-env transitions, next to any LeRobot-format one."""
    from lerobot_pirl import transition_keys as keys
    from lerobot_pirl.runtime.transitions import chunk_message, decode_transitions

    policy = tiny_pi_rl("flow_sde")
    args, kwargs, sample = _packed_step(policy, task=True)
    packed = chunk_message(*args, **kwargs)
    lerobot_format = synthetic_transitions(policy, n_envs=1, n_chunks=1)[0]
    back = decode_transitions(transitions_to_bytes([packed, lerobot_format]))
    assert len(back) == 4 and _equal(dict(back[3]), dict(lerobot_format))  # passed through as it was
    state, _, executed, rewards, terminated, truncated, _ = args
    for i, t in enumerate(back[:3]):
        info = t["complementary_info"]
        assert torch.equal(t["state"]["observation.state"], state["observation.state"][i : i + 1])
        assert t["state"]["task"] == [f"task {i}"]
        assert torch.equal(t["action"], executed[i]) and t["reward"] == float(rewards[i])
        assert t["done"] is bool(terminated[i]) and t["truncated"] is bool(truncated[i])
        assert torch.equal(info[keys.CHAIN], sample.chain[i].float()) and torch.equal(
            info[keys.LOGPROB], sample.logprob[i]
        )
        assert info[keys.POLICY_VERSION] == 4 and info[keys.ACTOR_ID] == 9 and keys.PACKED not in info
        assert (
            info[keys.ENV_ID],
            info[keys.EPISODE_ID],
            info[keys.CHUNK_INDEX],
            info[keys.EPISODE_CHUNK],
        ) == (
            i,
            [2, 0, 1][i],
            [5, 6, 7][i],
            [1, 2, 3][i],
        )
        assert info[keys.INTERVENTION] is (i == 1) and info[keys.STEPS] == [5, 2, 5][i]
        assert type(info[keys.SUCCESS]) is float and type(info[keys.DENOISE_INDEX]) is int


def test_a_packed_message_whose_fields_disagree_is_refused_and_the_learner_carries_on(tmp_path):
    import threading as th

    from lerobot_pirl.learner import PiRLLearner
    from lerobot_pirl.runtime.transitions import chunk_message, unpack_transitions
    from tests.helpers import metaworld_run_config

    policy = tiny_pi_rl("flow_sde")
    args, kwargs, _ = _packed_step(policy)
    good = chunk_message(*args, **kwargs)
    short = dict(good, action=good["action"][:2])  # 2 actions for 3 envs
    with pytest.raises(ValueError, match=r"packed transition: action must hold 3 entries"):
        unpack_transitions([short])
    bad_count = dict(good, complementary_info={**good["complementary_info"], "packed_transitions": "3"})
    with pytest.raises(ValueError, match="must be a positive int"):
        unpack_transitions([bad_count])

    learner = PiRLLearner(metaworld_run_config(tmp_path), th.Event())
    before = len(learner.buffer)
    learner.transition_queue.put(transitions_to_bytes([short]))
    learner.drain()
    assert len(learner.buffer) == before
    assert any("undecodable transition message (ValueError)" in k for k in learner.buffer.rejected)
