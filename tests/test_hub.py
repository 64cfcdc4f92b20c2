"""Pushing to the Hub, against a local stand-in for the Hub's create-repo and upload routes: what a push
uploads, a flaky Hub retried, no token refused at start-up."""

from __future__ import annotations

import threading

import huggingface_hub.constants
import pytest
import torch
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class

from lerobot_pirl.hub import PI_RL_SUBFOLDER, push_folder
from lerobot_pirl.learner import PiRLLearner
from tests.fake_hub import FakeHub
from tests.helpers import metaworld_run_config
from tests.test_learner import _one_update

REPO = "user/pirl-button-press"
PUSH = ["--policy.push_to_hub=true", f"--policy.repo_id={REPO}"]


@pytest.fixture
def hub(monkeypatch):
    """A fake Hub as the client's endpoint, online, with a token."""
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    yield fake
    fake.close()


def test_the_learner_pushes_a_loadable_base_the_pi_rl_checkpoint_and_a_card(tmp_path, hub):
    cfg = metaworld_run_config(tmp_path, [*PUSH, "--policy.push_every=1"])
    learner = PiRLLearner(cfg, threading.Event())
    _one_update(learner)
    learner.save()  # push_every=1: this checkpoint is pushed in the background
    learner.pusher.close(timeout=120)
    assert learner.pusher.failed == [] and len(learner.pusher.pushed) == 1
    files = hub.files[REPO]
    assert {"config.json", "model.safetensors", "README.md", f"{PI_RL_SUBFOLDER}/config.json"} <= set(files)
    assert any(name.startswith("policy_preprocessor") for name in files)
    assert all(tok == "Bearer hf_test_token" for tok in hub.tokens)
    # The root is a plain base checkpoint that vanilla LeRobot loads, with the trained weights.
    root = hub.write_repo(REPO, tmp_path / "download")
    cfg_root = PreTrainedConfig.from_pretrained(root)
    assert cfg_root.type == "flow_mlp"
    plain = get_policy_class("flow_mlp").from_pretrained(root)
    trained = learner.policy.base.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert PreTrainedConfig.from_pretrained(root / PI_RL_SUBFOLDER).type == "pi_rl"
    card = files["README.md"].decode()
    assert "library_name: lerobot" in card and "pi_rl" in card and "pirl_metaworld" in card
    assert "Environment steps: 640" in card


def test_a_flaky_hub_is_retried(tmp_path, hub):
    hub.fail_commits = 2
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    assert push_folder(tmp_path / "out", REPO, attempts=3, backoff_s=0.01)
    assert hub.failed == 2 and hub.files[REPO] == {"config.json": b"{}"}
    hub.failed, hub.fail_commits = 0, 10**6  # a Hub that stays down: given up on, never raised
    assert not push_folder(tmp_path / "out", REPO, attempts=2, backoff_s=0.01)


def test_no_token_is_refused_at_start_up(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_tokens"))
    with pytest.raises(ValueError, match=r"policy\.repo_id=.*needs a token"):
        PiRLLearner(metaworld_run_config(tmp_path, PUSH), threading.Event())
