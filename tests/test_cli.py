"""Entry points: start-up errors as one line, run-time errors with a traceback; configuration fields
pi_rl does not read are refused; one definition of the seed ranges and the evaluation protocol."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from lerobot.policies.gaussian_actor.configuration_gaussian_actor import ActorLearnerConfig, ConcurrencyConfig

from lerobot_pirl import seeds
from lerobot_pirl.cli import run_cli
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import UNUSED_FIELDS, PiRLConfig
from tests.helpers import tiny_flow_mlp_config


def test_a_start_up_error_is_one_line_and_exit_code_2(capsys):
    def startup():
        raise FileNotFoundError("checkpoint: /nowhere is not a pretrained_model directory\nmore detail")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(startup)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: checkpoint: /nowhere is not a pretrained_model directory\n"


def test_a_run_time_error_keeps_its_traceback_and_exits_1(caplog):
    ran = []

    def run():
        ran.append(True)
        return {}["x"]  # a KeyError in the middle of training is a bug, not a user error

    with pytest.raises(SystemExit) as exit_info, caplog.at_level("ERROR"):
        run_cli(lambda: run)
    assert ran and exit_info.value.code == 1
    record = caplog.records[-1]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def _pi_rl(**kw) -> PiRLConfig:
    return PiRLConfig(base=tiny_flow_mlp_config(), device="cpu", push_to_hub=False, **kw)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"storage_device": "cuda"}, "storage_device"),
        ({"online_step_before_learning": 100}, "online_step_before_learning"),
        ({"online_buffer_capacity": 10}, "online_buffer_capacity"),
        ({"offline_buffer_capacity": 10}, "offline_buffer_capacity"),
        ({"async_prefetch": True}, "async_prefetch"),
        (
            {"actor_learner_config": ActorLearnerConfig(policy_parameters_push_frequency=1)},
            "actor_learner_config.policy_parameters_push_frequency",
        ),
        ({"concurrency": ConcurrencyConfig(learner="processes")}, "concurrency.learner"),
        ({"concurrency": ConcurrencyConfig(actor="processes")}, "concurrency.actor"),
        ({"n_obs_steps": 2}, "n_obs_steps"),
        ({"use_peft": True}, "use_peft"),
    ],
)
def test_fields_pi_rl_does_not_read_are_refused_unless_default(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: .*leave it at"):
        _pi_rl(**kwargs)


def test_every_refused_field_exists_and_defaults_pass():
    config = _pi_rl()  # all defaults: accepted
    for name in UNUSED_FIELDS:
        obj = config
        for part in name.split("."):
            assert dataclasses.is_dataclass(obj) and hasattr(obj, part), name
            obj = getattr(obj, part)


def test_seed_ranges_are_disjoint_contiguous_and_named_once():
    ranges = seeds.RANGES
    assert ranges[0].start == 0 and ranges[-1].stop is None
    for a, b in itertools.pairwise(ranges):
        assert a.stop == b.start
    assert seeds.range_of(2_500_000) is seeds.VALIDATION and seeds.range_of(0) is seeds.TRAINING
    assert seeds.EVAL_PROTOCOL.first_seed == seeds.HELD_OUT.start
    with pytest.raises(ValueError, match="negative"):
        seeds.range_of(-1)


def test_every_entry_point_defaults_to_the_published_protocol(capsys):
    from lerobot_pirl.bench.cli import parser
    from lerobot_pirl.bench.setups import TaskSetup
    from lerobot_pirl.collect import DEMO_SEED
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig
    from lerobot_pirl.evaluate import main as eval_main

    protocol = seeds.EVAL_PROTOCOL
    assert parser().parse_args([]).eval_seed == protocol.first_seed
    assert TaskSetup().episode_length == protocol.episode_length
    assert MetaWorldStateEnvConfig().eval_seed == protocol.first_seed
    assert DEMO_SEED in seeds.DEMOS and MetaWorldStateEnvConfig().seed in seeds.TRAINING
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{protocol.episodes} episodes of {protocol.episode_length} env steps" in help_text
    assert f"held-out seeds from {protocol.first_seed:,}" in help_text


def test_torchcodec_load_failure_is_one_line():
    """LeRobot's report of a torchcodec that cannot load (a traceback per FFmpeg version) becomes one line."""
    import logging

    import lerobot_pirl  # noqa: F401  (installs the filter)
    from lerobot_pirl.quiet import TORCHCODEC_LINE

    record = logging.LogRecord(
        "lerobot.utils.import_utils",
        logging.WARNING,
        __file__,
        1,
        "Could not load libtorchcodec.\nTraceback (most recent call last):\n  ...\n'torchcodec' is installed but "
        "cannot be loaded (see the error above). Falling back to 'pyav' as a default decoder.",
        (),
        None,
    )
    logger = logging.getLogger("lerobot.utils.import_utils")
    assert all(f.filter(record) for f in logger.filters)
    assert record.getMessage() == TORCHCODEC_LINE and "\n" not in record.getMessage()
    other = logging.LogRecord("lerobot.utils.import_utils", logging.WARNING, __file__, 1, "x", (), None)
    assert all(f.filter(other) for f in logger.filters) and other.getMessage() == "x"


def test_plot_draws_a_runs_curves_and_refuses_a_folder_without_metrics(tmp_path, capsys):
    import json

    from lerobot_pirl.plot import main as plot_main
    from lerobot_pirl.plot import series

    records = [
        {"kind": "eval", "env_steps": 0, "eval_success_rate": 0.3},
        *(
            {
                "kind": "update",
                "env_steps": 5000 * i,
                "episode_success": 0.1 * i,
                "approx_kl": 0.01,
                "clip_fraction": 0.1,
            }
            for i in range(1, 5)
        ),
        {"kind": "eval", "env_steps": 20000, "eval_success_rate": 0.8},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{half a line")
    assert series(records, "eval_success_rate", "eval") == ([0, 20000], [0.3, 0.8])
    plot_main([str(tmp_path)])
    png = tmp_path / "training_curves.png"
    assert png.stat().st_size > 20_000 and str(png) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        plot_main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "metrics.jsonl does not exist" in capsys.readouterr().err
