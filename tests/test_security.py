"""The actor-learner channel lets in only actors with the right certificate and token (loopback only;
certificates made here with ``cryptography``)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import queue
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.utils import grpc_channel_options, send_bytes_in_chunks

from lerobot_pirl.runtime.security import (
    TokenCheck,
    TransportSecurityConfig,
    check_learner_exposure,
    learner_channel,
    read_token,
    server_credentials,
)
from lerobot_pirl.runtime.service import BroadcastLearnerService, WeightsBoard, start_server, stop_server
from tests.helpers import metaworld_run_config
from tests.test_runtime_e2e import _free_port

TOKEN = "s3cret-actor-token-7f1c"  # a test secret


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_key=None, issuer=None, ca: bool = False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _write(path: Path, obj) -> str:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA with a server and a client certificate, and a rogue CA's client certificate."""
    d = tmp_path_factory.mktemp("pki")
    files = {}
    for ca_name in ("ca", "rogue"):
        ca_key = _key()
        ca = _cert(f"{ca_name} CA", ca_key, ca=True)
        files[f"{ca_name}_cert"] = _write(d / f"{ca_name}.pem", ca)
        for who in ("server", "client"):
            key = _key()
            files[f"{ca_name}_{who}_key"] = _write(d / f"{ca_name}_{who}.key", key)
            files[f"{ca_name}_{who}_cert"] = _write(d / f"{ca_name}_{who}.pem", _cert(who, key, ca_key, ca))
    return files


@pytest.fixture
def learner(pki):
    """A learner service on loopback with mutual TLS and the actor token; yields (port, transitions, check)."""
    cfg = TransportSecurityConfig(
        server_cert=pki["ca_server_cert"], server_key=pki["ca_server_key"], ca_cert=pki["ca_cert"]
    )
    board, shutdown, transitions = WeightsBoard(), threading.Event(), queue.Queue()
    board.publish(1, b"weights-v1")
    service = BroadcastLearnerService(
        board,
        shutdown_event=shutdown,
        transition_queue=transitions,
        interaction_message_queue=queue.Queue(),
        queue_get_timeout=0.1,
    )
    check = TokenCheck(TOKEN)
    port = _free_port()
    server = start_server(
        service, "127.0.0.1", port, credentials=server_credentials(cfg), interceptors=(check,)
    )
    yield port, transitions, check
    shutdown.set()
    stop_server(server)


def _actor_cfg(pki, prefix: str = "ca", **kw) -> TransportSecurityConfig:
    return TransportSecurityConfig(
        ca_cert=pki["ca_cert"],
        client_cert=pki[f"{prefix}_client_cert"],
        client_key=pki[f"{prefix}_client_key"],
        **kw,
    )


def _try(channel: grpc.Channel) -> tuple[bool, bool]:
    """(weights received, transition accepted) over one channel."""
    stub = services_pb2_grpc.LearnerServiceStub(channel)
    got_weights = sent = False
    try:
        first = next(iter(stub.StreamParameters(services_pb2.Empty(), timeout=5)))
        got_weights = bool(first.data)
    except grpc.RpcError:
        pass
    try:
        stub.SendTransitions(send_bytes_in_chunks(b"junk-or-not", services_pb2.Transition), timeout=5)
        sent = True
    except grpc.RpcError:
        pass
    channel.close()
    return got_weights, sent


def _wait_empty(q: queue.Queue) -> bool:
    try:
        q.get(timeout=0.5)
        return False
    except queue.Empty:
        return True


def test_an_actor_with_certificate_and_token_gets_weights_and_sends_transitions(pki, learner, monkeypatch):
    port, transitions, check = learner
    monkeypatch.setenv("PIRL_ACTOR_TOKEN", TOKEN)
    channel = learner_channel("127.0.0.1", port, _actor_cfg(pki), grpc_channel_options())
    assert _try(channel) == (True, True)
    assert transitions.get(timeout=5) == b"junk-or-not"
    assert check.rejected == 0


@pytest.mark.parametrize("who", ["no TLS", "rogue certificate", "no token", "wrong token"])
def test_anyone_else_gets_nothing_in_and_nothing_out(pki, learner, monkeypatch, tmp_path, who):
    port, transitions, check = learner
    monkeypatch.setenv("PIRL_ACTOR_TOKEN", TOKEN)
    if who == "no TLS":
        channel = learner_channel("127.0.0.1", port, TransportSecurityConfig(), grpc_channel_options())
    elif who == "rogue certificate":
        channel = learner_channel("127.0.0.1", port, _actor_cfg(pki, "rogue"), grpc_channel_options())
    else:
        monkeypatch.delenv("PIRL_ACTOR_TOKEN")
        if who == "wrong token":
            (tmp_path / "token").write_text("not-the-token\n")
        cfg = _actor_cfg(pki, token_file=str(tmp_path / "token") if who == "wrong token" else None)
        channel = learner_channel("127.0.0.1", port, cfg, grpc_channel_options())
    assert _try(channel) == (False, False)
    assert _wait_empty(transitions), "a transition from an unauthorised peer reached the learner"
    if who in ("no token", "wrong token"):  # TLS let them in: the token check refused both calls
        assert check.rejected == 2


def test_exposed_learner_refuses_to_start_without_tls_and_token(tmp_path, pki, monkeypatch):
    monkeypatch.delenv("PIRL_ACTOR_TOKEN", raising=False)
    cfg = TransportSecurityConfig()
    with pytest.raises(ValueError, match=r"without TLS \(.*\) and a token \(.*\);.*allow_insecure_network"):
        check_learner_exposure("0.0.0.0", False, None, cfg)
    with pytest.raises(ValueError, match=r"without a token"):
        check_learner_exposure("10.1.2.3", True, None, cfg)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_learner_exposure(host, False, None, cfg)
    check_learner_exposure("0.0.0.0", True, TOKEN, cfg)
    check_learner_exposure("0.0.0.0", False, None, TransportSecurityConfig(allow_insecure_network=True))

    from lerobot_pirl.learner import PiRLLearner

    run = metaworld_run_config(tmp_path, ["--policy.actor_learner_config.learner_host=0.0.0.0"])
    with pytest.raises(ValueError, match="allow_insecure_network"):
        PiRLLearner(run, threading.Event())


def test_security_settings_are_checked_at_start_up_naming_the_field(tmp_path, pki):
    with pytest.raises(ValueError, match=r"server_cert and server_key go together"):
        TransportSecurityConfig(server_cert="a.pem")
    with pytest.raises(FileNotFoundError, match=r"policy\.transport\.ca_cert: .*missing\.pem"):
        server_credentials(
            TransportSecurityConfig(
                server_cert=pki["ca_server_cert"],
                server_key=pki["ca_server_key"],
                ca_cert=str(tmp_path / "missing.pem"),
            )
        )
    (tmp_path / "bad.pem").write_text("hello")
    with pytest.raises(ValueError, match=r"policy\.transport\.server_cert: .* is not PEM"):
        server_credentials(TransportSecurityConfig(server_cert=str(tmp_path / "bad.pem"), server_key="y"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match=r"token_file: .* is empty"):
        read_token(TransportSecurityConfig(token_file=str(tmp_path / "empty")))


def test_the_token_is_never_logged_or_saved(tmp_path, pki, monkeypatch, caplog):
    """A learner with TLS and a token, checkpointed: no file under the run and no log line holds the token."""
    from lerobot_pirl.learner import PiRLLearner

    monkeypatch.setenv("PIRL_ACTOR_TOKEN", TOKEN)
    args = [
        "--policy.actor_learner_config.learner_host=0.0.0.0",
        f"--policy.transport.server_cert={pki['ca_server_cert']}",
        f"--policy.transport.server_key={pki['ca_server_key']}",
        f"--policy.transport.ca_cert={pki['ca_cert']}",
    ]
    caplog.set_level(logging.DEBUG)
    run = metaworld_run_config(tmp_path, args)
    learner = PiRLLearner(run, threading.Event())
    learner.update_count = 1
    learner.save()
    learner.log({"kind": "update", "update": 1})
    files = [p for p in Path(run.output_dir).rglob("*") if p.is_file()]
    assert any(p.name == "train_config.json" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), f"{path} holds the actor token"
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(run) and TOKEN not in repr(learner.__dict__)


@pytest.mark.slow
def test_learner_and_actor_train_over_mutual_tls_with_a_token_and_an_intruder_gets_nothing(tmp_path):
    """The README's recipe end to end: scripts/make_certificates.sh, then a learner and an actor with TLS and
    the token; a second actor without the token is refused on every call and never counted as a sender."""
    import json
    import os
    import subprocess

    from tests.helpers import write_metaworld_base
    from tests.test_runtime_e2e import _config, _spawn, _updates, _wait

    repo = Path(__file__).resolve().parents[1]
    certs = tmp_path / "certs"
    subprocess.run(
        ["bash", str(repo / "scripts" / "make_certificates.sh"), str(certs), "127.0.0.1"], check=True
    )
    write_metaworld_base(tmp_path / "base")
    recipe = _config(tmp_path, tmp_path / "base", _free_port())
    raw = json.loads(recipe.read_text())
    raw["policy"]["online_steps"] = 2
    raw["policy"]["actor"]["chunks_per_version"] = 16
    raw["policy"]["transport"] = {"ca_cert": str(certs / "ca.pem")}
    recipe.write_text(json.dumps(raw))
    learner_flags = [
        f"--policy.transport.server_cert={certs}/learner.pem",
        f"--policy.transport.server_key={certs}/learner.key",
    ]
    actor_flags = [
        f"--policy.transport.client_cert={certs}/actor.pem",
        f"--policy.transport.client_key={certs}/actor.key",
    ]
    os.environ["PIRL_ACTOR_TOKEN"] = TOKEN
    procs = []
    try:
        learner = _spawn("lerobot_pirl.learner", recipe, tmp_path / "learner.log", *learner_flags)
        actor = _spawn("lerobot_pirl.actor", recipe, tmp_path / "actor.log", "--env.seed=0", *actor_flags)
        del os.environ["PIRL_ACTOR_TOKEN"]
        intruder = _spawn(
            "lerobot_pirl.actor", recipe, tmp_path / "intruder.log", "--env.seed=5", *actor_flags
        )
        procs = [learner, actor, intruder]
        assert _wait(learner, 240, tmp_path / "learner.log") == 0, (tmp_path / "learner.log").read_text()[
            -3000:
        ]
    finally:
        os.environ.pop("PIRL_ACTOR_TOKEN", None)
        for p in procs:
            if p.poll() is None:
                p.kill()
    log = (tmp_path / "learner.log").read_text()
    assert "(TLS, actor token required)" in log
    updates = _updates(tmp_path / "run")
    assert [r["update"] for r in updates] == [1, 2]
    assert all(r["actors"] == 1.0 for r in updates)  # the intruder's transitions never arrived
    assert updates[-1]["calls_rejected"] >= 1
    assert "UNAUTHENTICATED" in (tmp_path / "intruder.log").read_text()
    for path in [*(tmp_path / "run").rglob("*"), *tmp_path.glob("*.log")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
