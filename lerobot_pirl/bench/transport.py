"""Transport and learner throughput on loopback (``make bench-transport``).

    python -m lerobot_pirl.bench.transport [--messages 200] [--per_message 16]

1. Transitions per second through LeRobot's gRPC path (``transitions_to_bytes`` -> ``SendTransitions``
   in 2 MB chunks -> ``bytes_to_transitions`` on the learner) with the πRL payload in
   ``complementary_info`` vs the same observations without it, and with the πRL payload packed as the
   actor sends it (one Transition per actor step, split on the learner).
2. Learner updates per second for flow_mlp with the MetaWorld recipe's sizes (rollout 1024 chunk
   transitions, minibatch 256, 4 epochs), including rollout preparation (values, GAE).
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time

import grpc
import torch
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.utils import (
    grpc_channel_options,
    send_bytes_in_chunks,
    transitions_to_bytes,
)

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm, RolloutSource
from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from lerobot_pirl.bench.sampling import build, flow_mlp_model
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from lerobot_pirl.runtime.service import BroadcastLearnerService, WeightsBoard, start_server, stop_server
from lerobot_pirl.runtime.transitions import (
    chunk_message,
    chunk_transitions,
    decode_transitions,
    unpack_transitions,
)


def policy() -> PiRLPolicy:
    """The benchmark's flow_mlp pi_rl policy (the same one the sampling benchmark times), Flow-SDE hybrid."""
    k = 4
    return build(flow_mlp_model(k)[0], "flow_sde", k)


def transitions(pol: PiRLPolicy, n: int, chunk: int, packed: bool = False) -> list:
    """``chunk`` actor steps of ``n`` envs: per-env transitions, or one packed transition per step."""
    out = []
    state = {"observation.state": torch.randn(n, 39)}
    build = (lambda *a, **k: [chunk_message(*a, **k)]) if packed else chunk_transitions
    for c in range(chunk):
        sample = pol.sample_chain(state)
        out += build(
            state,
            state,
            sample.executed,
            torch.randn(n),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, dtype=torch.bool),
            sample,
            policy_version=0,
            actor_id=1,
            env_ids=torch.arange(n),
            episode_ids=torch.zeros(n),
            chunk_indices=torch.full((n,), c),
            episode_chunks=torch.full((n,), c),
            success=torch.zeros(n),
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpc_rate(payload: list, messages: int) -> float:
    """Transitions per second from serialisation on the actor to decoded transitions on the learner."""
    q: queue.Queue = queue.Queue()
    shutdown = threading.Event()
    service = BroadcastLearnerService(
        WeightsBoard(),
        shutdown_event=shutdown,
        transition_queue=q,
        interaction_message_queue=queue.Queue(),
        queue_get_timeout=0.1,
    )
    port = free_port()
    server = start_server(service, "127.0.0.1", port)
    decoded = [0]
    per_message = len(unpack_transitions(payload))

    def consume():
        while decoded[0] < messages * per_message:
            decoded[0] += len(decode_transitions(q.get()))

    consumer = threading.Thread(target=consume)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", grpc_channel_options())
    stub = services_pb2_grpc.LearnerServiceStub(channel)

    def stream():
        for _ in range(messages):
            yield from send_bytes_in_chunks(transitions_to_bytes(payload), services_pb2.Transition)

    t = time.perf_counter()
    consumer.start()
    stub.SendTransitions(stream())
    consumer.join()
    rate = messages * per_message / (time.perf_counter() - t)
    channel.close()
    shutdown.set()
    stop_server(server)
    return rate


def update_rate(pol: PiRLPolicy, repeats: int) -> float:
    cfg = PiRLAlgorithmConfig(
        policy_config=pol.config,
        rollout_size=1024,
        minibatch_size=256,
        update_epochs=4,
        actor_lr=3e-5,
        critic_lr=1e-3,
    )
    algo = PiRLAlgorithm(pol, cfg)
    algo.make_optimizers_and_scheduler()
    data = transitions(pol, 16, 64)  # 1024 chunk transitions from 16 env streams
    t = time.perf_counter()
    for _ in range(repeats):
        buffer = RolloutBuffer(algo.transition_spec())
        buffer.add(data)
        batch, _ = buffer.take(algo.policy_version, 10**6)
        rollout = algo.prepare_rollout(batch)
        algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
        algo.policy_version += 1  # the same data is re-used: it is no longer on-policy for the guard
    return repeats / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--per_message", type=int, default=16, help="transitions per message (= envs per actor)")
    p.add_argument("--update_repeats", type=int, default=5)
    args = p.parse_args()
    pol = policy()
    with torch.no_grad():
        pirl = transitions(pol, args.per_message, 1)
        packed = transitions(pol, args.per_message, 1, packed=True)
    plain = [{**t, "complementary_info": {}} for t in pirl]
    rates = {
        name: grpc_rate(payload, args.messages)
        for name, payload in [("pirl", pirl), ("plain", plain), ("packed", packed)]
    }
    n = args.per_message
    print(f"gRPC loopback, {n} transitions/message, {args.messages} messages:")
    print(
        f"  with the πRL payload: {rates['pirl']:,.0f} transitions/s ({len(transitions_to_bytes(pirl)) / n:,.0f} B each)"
    )
    print(
        f"  without it:           {rates['plain']:,.0f} transitions/s ({len(transitions_to_bytes(plain)) / n:,.0f} B each)"
    )
    print(f"  ratio:                {rates['pirl'] / rates['plain']:.2f}")
    print(
        f"  πRL payload packed (as the actor sends it): {rates['packed']:,.0f} transitions/s "
        f"({len(transitions_to_bytes(packed)) / n:,.0f} B each), {rates['packed'] / rates['pirl']:.2f}x per-env transitions"
    )
    print(
        f"learner updates/s (flow_mlp, 1024 transitions, minibatch 256 x 4 epochs): {update_rate(pol, args.update_repeats):.2f}"
    )


if __name__ == "__main__":
    main()
