"""The actor's three gRPC streams to the learner, on LeRobot's transport helpers, with reconnection.

Weights come down ``StreamParameters``; transitions and interaction messages go up ``SendTransitions``
and ``SendInteractions``. Each stream runs in its own thread. When one breaks (the learner restarts,
the network drops) it is opened again with exponential back-off; every attempt is one log line with the
gRPC status, never gRPC's multi-line debug string. After ``max_attempts`` failures in a row the actor
is told to stop (:attr:`StreamGuard.gave_up`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from queue import Queue

import grpc
from lerobot.rl.actor import interactions_stream, transitions_stream
from lerobot.transport import services_pb2
from lerobot.transport.utils import receive_bytes_in_chunks

logger = logging.getLogger(__name__)

# A stream that stayed up this long was connected (a refused connection fails within milliseconds): its
# next failure starts the back-off anew.
HEALTHY_STREAM_S = 5.0


def receive_parameters(client, q: Queue, shutdown, timeout: float) -> None:
    """Weights publications from the learner into ``q`` (returns when the stream ends)."""
    receive_bytes_in_chunks(client.StreamParameters(services_pb2.Empty()), q, shutdown, "[ACTOR] parameters")


def send_transitions(client, q: Queue, shutdown, timeout: float) -> None:
    """Serialised transition lists from ``q`` to the learner (returns when the stream ends)."""
    client.SendTransitions(transitions_stream(shutdown, q, timeout))


def send_interactions(client, q: Queue, shutdown, timeout: float) -> None:
    """Interaction messages (episode statistics, evaluations) from ``q`` to the learner."""
    client.SendInteractions(interactions_stream(shutdown, q, timeout))


def rpc_problem(error: grpc.RpcError) -> str:
    """A gRPC error as one short line: its status code and the first line of its details."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    first = (details or "").strip().splitlines()[0] if (details or "").strip() else ""
    return f"{code.name if code is not None else 'error'}: {first[:160]}"


class StreamGuard:
    """Runs streams with reconnection and remembers whether one of them gave up on the learner."""

    def __init__(self, shutdown, max_attempts: int):
        self.shutdown = shutdown
        self.max_attempts = max_attempts
        self.gave_up = False

    def run(self, name: str, stream: Callable[[], None]) -> None:
        """Run ``stream`` until shutdown, opening it again with back-off whenever it ends or fails."""
        attempt = 0
        while not self.shutdown.is_set():
            started = time.time()
            try:
                stream()
                problem = "stream closed"
            except grpc.RpcError as e:
                problem = rpc_problem(e)
            if self.shutdown.is_set():
                return
            attempt = 0 if time.time() - started > HEALTHY_STREAM_S else attempt + 1
            if attempt > self.max_attempts:
                logger.error(
                    "[ACTOR] %s: learner unreachable after %d attempts, stopping", name, self.max_attempts
                )
                self.gave_up = True
                self.shutdown.set()
                return
            delay = min(0.5 * 2**attempt, 10.0) * (0.8 + 0.4 * random.random())
            logger.warning(
                "[ACTOR] %s stream: %s; reconnecting in %.1fs (attempt %d/%d)",
                name,
                problem,
                delay,
                attempt,
                self.max_attempts,
            )
            self.shutdown.wait(delay)

    def start(self, name: str, stream: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(name, stream), name=f"actor-{name}", daemon=True)
        thread.start()
        return thread
