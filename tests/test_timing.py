"""Where the time goes: the phase tally, its check on the learner side and the update record's fields."""

import math
import time

import pytest

from lerobot_pirl.runtime.interactions import decode_interaction, encode_interaction
from lerobot_pirl.runtime.timing import ACTOR_PHASES, LEARNER_PHASES, PhaseClock, time_record


def test_phase_clock_tallies_each_phase_until_taken():
    clock = PhaseClock(ACTOR_PHASES)
    with clock.phase("env"):
        time.sleep(0.02)
    with clock.phase("env"):
        time.sleep(0.01)
    clock.add("wait", 0.5)
    tally = clock.take()
    assert set(tally) == set(ACTOR_PHASES)
    assert 0.03 <= tally["env"] < 0.5 and tally["wait"] == 0.5 and tally["sample"] == 0.0
    assert clock.take() == dict.fromkeys(ACTOR_PHASES, 0.0)  # a new tally
    with pytest.raises(KeyError, match="unknown phase 'enw'"), clock.phase("enw"):
        pass


def test_a_phase_that_raises_is_still_counted():
    clock = PhaseClock(LEARNER_PHASES)
    with pytest.raises(RuntimeError), clock.phase("optimise"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    assert clock.take()["optimise"] >= 0.01


def test_time_record_sums_and_shares():
    record = time_record({"env": 3.0, "sample": 1.0}, {"optimise": 2.0})
    assert record["time_actor_env_s"] == 3.0 and record["time_actor_env_frac"] == 0.75
    assert record["time_actor_eval_frac"] == 0.0 and record["time_learner_optimise_s"] == 2.0
    assert record["time_learner_prepare_s"] == 0.0
    empty = time_record({}, {})
    assert math.isnan(empty["time_actor_env_frac"])  # no actor report since the last update


@pytest.mark.parametrize(
    "time_s",
    [{"env": -1.0}, {"env": float("nan")}, {"gpu": 1.0}, {"env": True}, [1.0], "1s", {"env": 1e9}],
)
def test_the_learner_ignores_a_malformed_tally(time_s):
    assert decode_interaction(encode_interaction({"env_steps": 5, "time_s": time_s})) is None


def test_the_learner_accepts_a_partial_tally():
    message = decode_interaction(encode_interaction({"env_steps": 5, "time_s": {"env": 1.5}}))
    assert message is not None and message["time_s"] == {"env": 1.5}
