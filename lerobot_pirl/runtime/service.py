"""LeRobot's gRPC ``LearnerService`` with parameter broadcast to every connected actor.

LeRobot's service hands each pushed parameter buffer to whichever ``StreamParameters`` call pulls it
from a shared queue first, so with several actors only one of them gets each version. πRL is
on-policy: every actor must switch to every new version. ``WeightsBoard`` keeps the latest versioned
buffer and each stream sends every version it has not sent yet. The proto is unchanged. The board also
knows what each open stream has sent, so a finished learner can wait until its final weights reached
every actor. Transitions and interactions are assembled from their chunks as LeRobot's handlers do, but
with a cap on a message's size and on a stream's bytes per second, so one peer cannot exhaust the
learner's memory: a message over the cap ends its stream (``RESOURCE_EXHAUSTED``), a fast stream is slowed
down, a chunk of unknown transfer state is dropped; all are counted.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
from lerobot.rl.learner_service import SHUTDOWN_TIMEOUT, LearnerService
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.services_pb2 import TransferState
from lerobot.transport.utils import MAX_MESSAGE_SIZE, send_bytes_in_chunks

logger = logging.getLogger(__name__)


class WeightsBoard:
    """The latest serialized weights, their version and how many times weights were published, with
    waiting for a newer publication: re-publishing the same version reaches every subscriber again."""

    def __init__(self):
        self._cond = threading.Condition()
        self._published = 0  # publications so far
        self._version = -1
        self._buffer: bytes | None = None
        self._sent: dict[int, int] = {}  # open stream -> publications it has sent
        self._streams = 0

    def publish(self, version: int, buffer: bytes) -> None:
        with self._cond:
            self._published += 1
            self._version, self._buffer = version, buffer
            self._cond.notify_all()

    def republish(self) -> bool:
        """Send the current weights once more to every subscriber (False when nothing was published)."""
        with self._cond:
            if self._buffer is None:
                return False
            self._published += 1
            self._cond.notify_all()
            return True

    def subscribe(self) -> int:
        """A new stream's id (it has sent nothing yet)."""
        with self._cond:
            self._streams += 1
            self._sent[self._streams] = 0
            return self._streams

    def unsubscribe(self, stream: int) -> None:
        with self._cond:
            self._sent.pop(stream, None)
            self._cond.notify_all()

    def mark_sent(self, stream: int, publications: int) -> None:
        """``stream`` has sent everything up to publication number ``publications``."""
        with self._cond:
            if stream in self._sent:
                self._sent[stream] = publications
                self._cond.notify_all()

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every open stream has sent the latest publication; False after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(
                lambda: all(n >= self._published for n in self._sent.values()), timeout=timeout
            )

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, int, bytes | None]:
        """``(publications, version, weights)`` once more than ``seen`` publications were made, or
        ``(seen, -1, None)`` after ``timeout`` seconds without one."""
        with self._cond:
            self._cond.wait_for(lambda: self._published > seen, timeout=timeout)
            if self._published > seen:
                return self._published, self._version, self._buffer
            return seen, -1, None


class BroadcastLearnerService(LearnerService):
    """``LearnerService`` whose ``StreamParameters`` sends every weights publication to every actor."""

    def __init__(
        self,
        board: WeightsBoard,
        max_message_bytes: int = 1 << 30,
        max_stream_bytes_per_s: float | None = None,
        **kwargs,
    ):
        super().__init__(parameters_queue=None, seconds_between_pushes=0.0, **kwargs)
        self.board = board
        self.max_message_bytes = max_message_bytes
        self.max_stream_bytes_per_s = max_stream_bytes_per_s
        self._lock = threading.Lock()
        self.refused: Counter = Counter()  # why incoming streams were cut or slowed -> count

    def _count(self, why: str) -> None:
        with self._lock:
            self.refused[why] += 1

    def _receive(self, request_iterator, out, context, what: str) -> None:
        """Whole messages from a stream of chunks into ``out``, under the size and rate caps. As in LeRobot's
        transport, a message is the chunks up to a ``TRANSFER_END`` (a ``TRANSFER_BEGIN`` starts it over);
        a chunk of any other state is refused and drops the message it interrupts."""
        buffer, t0, total = io.BytesIO(), time.monotonic(), 0
        for item in request_iterator:
            if self.shutdown_event.is_set():
                return
            if item.transfer_state == TransferState.TRANSFER_BEGIN:
                buffer = io.BytesIO()
            elif item.transfer_state not in (TransferState.TRANSFER_MIDDLE, TransferState.TRANSFER_END):
                self._count(f"{what}: chunk of unknown transfer state {item.transfer_state}")
                buffer = io.BytesIO()
                continue
            if buffer.tell() + len(item.data) > self.max_message_bytes:
                self._count(f"{what}: message over {self.max_message_bytes} bytes")
                logger.warning(
                    "[LEARNER] cut a %s stream: a message over %d bytes", what, self.max_message_bytes
                )
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"a {what} message is over the learner's cap"
                )
            buffer.write(item.data)
            total += len(item.data)
            if item.transfer_state == TransferState.TRANSFER_END:
                out.put(buffer.getvalue())
                buffer = io.BytesIO()
            if self.max_stream_bytes_per_s:
                ahead = total / self.max_stream_bytes_per_s - (time.monotonic() - t0)
                if ahead > 0:  # faster than the cap: hold the stream (gRPC flow control slows the peer)
                    self._count(f"{what}: stream slowed to the rate cap")
                    time.sleep(ahead)

    def SendTransitions(self, request_iterator, context):  # noqa: N802
        self._receive(request_iterator, self.transition_queue, context, "transitions")
        return services_pb2.Empty()

    def SendInteractions(self, request_iterator, context):  # noqa: N802
        self._receive(request_iterator, self.interaction_message_queue, context, "interactions")
        return services_pb2.Empty()

    def StreamParameters(self, request, context):  # noqa: N802
        logger.info("[LEARNER] an actor subscribed to parameters")
        stream, seen = self.board.subscribe(), 0
        try:
            while not self.shutdown_event.is_set() and context.is_active():
                seen, version, buffer = self.board.wait_newer(seen, timeout=max(self.queue_get_timeout, 0.1))
                if buffer is None:
                    continue
                yield from send_bytes_in_chunks(
                    buffer, services_pb2.Parameters, log_prefix="[LEARNER] params"
                )
                self.board.mark_sent(stream, seen)
                logger.info("[LEARNER] sent policy version %d to an actor", version)
        finally:
            self.board.unsubscribe(stream)


def start_server(
    service: BroadcastLearnerService,
    host: str,
    port: int,
    max_workers: int = 32,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
) -> grpc.Server:
    """A gRPC server for the service (each actor holds 3 streams, so size the pool generously): TLS with
    ``credentials``, every call through ``interceptors`` first (the actor-token check)."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ],
    )
    services_pb2_grpc.add_LearnerServiceServicer_to_server(service, server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"learner: cannot bind {host}:{port} (port in use?)")
    server.start()
    logger.info(
        "[LEARNER] gRPC server listening on %s:%d (%s%s)",
        host,
        port,
        "TLS" if credentials else "no TLS",
        ", actor token required" if interceptors else "",
    )
    return server


def stop_server(server: grpc.Server) -> None:
    server.stop(SHUTDOWN_TIMEOUT).wait()
