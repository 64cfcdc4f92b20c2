"""Who may talk to the learner: TLS (optionally mutual) and a shared actor token on every gRPC call.

The token is read at start-up from a file or an environment variable; the config holds only where to find
it, so it never reaches ``train_config.json``, a checkpoint or a log line. The learner checks it in a
server interceptor, before any handler runs, in constant time; the actor adds it to every call's metadata.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

# The call-metadata key that carries the actor token.
TOKEN_METADATA_KEY = "x-pirl-actor-token"
LOOPBACK_NAMES = ("localhost",)


@dataclass
class TransportSecurityConfig:
    """TLS and the actor token of the actor-learner channel; learner and actor read the same section
    (``--policy.transport.*``), each the fields of its side."""

    # Learner: PEM certificate it serves with (TLS on when set, with server_key).
    server_cert: str | None = None
    # Learner: PEM private key of server_cert.
    server_key: str | None = None
    # PEM CA bundle. Actor: verifies the learner's certificate (TLS on when set). Learner: requires client
    # certificates signed by it (mutual TLS).
    ca_cert: str | None = None
    # Actor: PEM client certificate for mutual TLS (with client_key).
    client_cert: str | None = None
    # Actor: PEM private key of client_cert.
    client_key: str | None = None
    # File holding the shared actor token (its first line); read at start-up, never stored or logged.
    token_file: str | None = None
    # Environment variable holding the token when token_file is unset (no token when it is unset or empty).
    token_env: str = "PIRL_ACTOR_TOKEN"
    # Learner: serve on a non-loopback address without TLS and a token (INSECURE: anyone who reaches the port
    # can read the policy's weights and push transitions into the next update).
    allow_insecure_network: bool = False
    # Learner: the largest transitions / interactions message it assembles, in MiB (a bigger one ends its stream).
    max_message_mib: float = 1024.0
    # Learner: MiB per second one incoming stream may send (a faster one is held back); null: no cap.
    max_stream_mib_per_s: float | None = None
    # Learner: transitions per second one actor may add (bursts of 10 s allowed; the excess is dropped and
    # counted); null: no cap.
    max_transitions_per_s: float | None = None

    def __post_init__(self) -> None:
        rates = (self.max_stream_mib_per_s, self.max_transitions_per_s)
        if self.max_message_mib <= 0 or any(r is not None and r <= 0 for r in rates):
            raise ValueError(
                "policy.transport.max_message_mib, max_stream_mib_per_s and max_transitions_per_s must be > 0"
            )
        for first, second in (("server_cert", "server_key"), ("client_cert", "client_key")):
            if (getattr(self, first) is None) != (getattr(self, second) is None):
                raise ValueError(f"policy.transport.{first} and {second} go together: set both or neither")
        if not self.token_env:
            raise ValueError("policy.transport.token_env must name an environment variable")


def _read(cfg: TransportSecurityConfig, name: str) -> bytes | None:
    """The PEM file a field names (None when unset), or a one-line error naming the field."""
    path = getattr(cfg, name)
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"policy.transport.{name}: {path} is not a file (expected a PEM file)")
    data = p.read_bytes()
    if b"-----BEGIN" not in data:
        raise ValueError(f"policy.transport.{name}: {path} is not PEM (no '-----BEGIN' line)")
    return data


def read_token(cfg: TransportSecurityConfig) -> str | None:
    """The actor token from ``token_file`` or ``$token_env``; None when neither gives one."""
    if cfg.token_file is not None:
        p = Path(cfg.token_file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"policy.transport.token_file: {cfg.token_file} is not a file")
        lines = p.read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"policy.transport.token_file: {cfg.token_file} is empty")
        return token
    return os.environ.get(cfg.token_env, "").strip() or None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(cfg: TransportSecurityConfig) -> grpc.ServerCredentials | None:
    """The learner's TLS credentials (client certificates required when ``ca_cert`` is set), or None."""
    cert, key = _read(cfg, "server_cert"), _read(cfg, "server_key")
    ca = _read(cfg, "ca_cert")
    if cert is None:
        return None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(cfg: TransportSecurityConfig) -> grpc.ChannelCredentials | None:
    """The actor's TLS credentials (its client certificate for mutual TLS), or None for plain TCP."""
    ca, cert, key = _read(cfg, "ca_cert"), _read(cfg, "client_cert"), _read(cfg, "client_key")
    if ca is None and cert is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def check_learner_exposure(host: str, tls: bool, token: str | None, cfg: TransportSecurityConfig) -> None:
    """Refuse to serve a non-loopback address without TLS and a token, unless explicitly allowed."""
    if is_loopback(host) or (tls and token) or cfg.allow_insecure_network:
        return
    missing = " and ".join(
        m
        for m, ok in (
            ("TLS (policy.transport.server_cert/server_key)", tls),
            (f"a token (${cfg.token_env} or policy.transport.token_file)", token),
        )
        if not ok
    )
    raise ValueError(
        f"policy.actor_learner_config.learner_host={host} exposes the learner to the network without {missing}; "
        "set them, or pass --policy.transport.allow_insecure_network=true to accept the risk"
    )


def _unauthenticated(message: str):
    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return abort


class TokenCheck(grpc.ServerInterceptor):
    """Rejects every call whose metadata lacks the actor token (``UNAUTHENTICATED``), before its handler."""

    def __init__(self, token: str):
        self._token = token.encode()
        self._lock = threading.Lock()
        self.rejected = 0

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata or ()).get(TOKEN_METADATA_KEY, "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._token):
            return continuation(handler_call_details)
        with self._lock:
            self.rejected += 1
        logger.warning("[LEARNER] refused a call to %s: no valid actor token", handler_call_details.method)
        handler = continuation(handler_call_details)
        deny = _unauthenticated("a valid actor token is required")
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


class RateLimit:
    """Per-key token buckets: ``rate`` units per second, up to ``burst_s`` seconds' worth saved up."""

    def __init__(self, rate: float, burst_s: float = 10.0, clock=time.monotonic):
        self.rate, self.capacity, self.clock = rate, rate * burst_s, clock
        self._buckets: dict = {}

    def allow(self, key, units: int) -> bool:
        """Take ``units`` from ``key``'s bucket if it holds them (True), else take nothing (False)."""
        now = self.clock()
        level, last = self._buckets.get(key, (self.capacity, now))
        level = min(self.capacity, level + (now - last) * self.rate)
        ok = units <= level
        self._buckets[key] = (level - units if ok else level, now)
        return ok


_CallDetails = namedtuple(
    "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class TokenMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the actor token to the metadata of every call on a channel."""

    def __init__(self, token: str):
        self._token = token

    def _with_token(self, details):
        metadata = [*(details.metadata or ()), (TOKEN_METADATA_KEY, self._token)]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


def learner_channel(host: str, port: int, cfg: TransportSecurityConfig, options) -> grpc.Channel:
    """The actor's channel to the learner: TLS when configured, the token on every call when there is one."""
    target = f"{host}:{port}"
    creds = channel_credentials(cfg)
    channel = grpc.secure_channel(target, creds, options) if creds else grpc.insecure_channel(target, options)
    token = read_token(cfg)
    return grpc.intercept_channel(channel, TokenMetadata(token)) if token else channel
