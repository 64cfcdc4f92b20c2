"""LeRobot's gRPC ``LearnerService`` with parameter broadcast to every connected actor.

LeRobot's service hands each pushed parameter buffer to whichever ``StreamParameters`` call pulls it
from a shared queue first, so with several actors only one of them gets each version. πRL is
on-policy: every actor must switch to every new version. ``WeightsBoard`` keeps the latest versioned
buffer and each stream sends every version it has not sent yet. Transitions and interactions go
through LeRobot's own handlers unchanged; the proto is unchanged.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from lerobot.rl.learner_service import SHUTDOWN_TIMEOUT, LearnerService
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.utils import MAX_MESSAGE_SIZE, send_bytes_in_chunks

logger = logging.getLogger(__name__)


class WeightsBoard:
    """The latest serialized weights and their version, with waiting for a newer one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._version = -1
        self._buffer: bytes | None = None

    def publish(self, version: int, buffer: bytes) -> None:
        with self._cond:
            self._version, self._buffer = version, buffer
            self._cond.notify_all()

    def wait_newer(self, than: int, timeout: float) -> tuple[int, bytes | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._version > than, timeout=timeout)
            if self._version > than:
                return self._version, self._buffer
            return than, None


class BroadcastLearnerService(LearnerService):
    """``LearnerService`` whose ``StreamParameters`` sends every new weights version to every actor."""

    def __init__(self, board: WeightsBoard, **kwargs):
        super().__init__(parameters_queue=None, seconds_between_pushes=0.0, **kwargs)
        self.board = board

    def StreamParameters(self, request, context):  # noqa: N802
        logger.info("[LEARNER] an actor subscribed to parameters")
        sent = -1
        while not self.shutdown_event.is_set() and context.is_active():
            version, buffer = self.board.wait_newer(sent, timeout=max(self.queue_get_timeout, 0.1))
            if buffer is None:
                continue
            yield from send_bytes_in_chunks(buffer, services_pb2.Parameters, log_prefix="[LEARNER] params")
            sent = version
            logger.info("[LEARNER] sent policy version %d to an actor", version)


def start_server(
    service: BroadcastLearnerService, host: str, port: int, max_workers: int = 32
) -> grpc.Server:
    """A gRPC server for the service (each actor holds 3 streams, so size the pool generously)."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ],
    )
    services_pb2_grpc.add_LearnerServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"learner: cannot bind {host}:{port} (port in use?)")
    server.start()
    logger.info("[LEARNER] gRPC server listening on %s:%d", host, port)
    return server


def stop_server(server: grpc.Server) -> None:
    server.stop(SHUTDOWN_TIMEOUT).wait()
