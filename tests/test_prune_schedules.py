"""Sparsity schedules and PruneConfig against the formulas (REFERENCE.md section 3) and hand values."""
import numpy as np
import pytest
import yaml

from paddle_kure.prune import (ConstantSchedule, CubicSchedule, LogSchedule, PruneConfig,
                               schedule_from_dict)


def test_log_schedule_hand_values():
    # 0.75 * ln(2 + p) / ln(5) for p = 0..3, worked out by hand: ln2/ln5 = 0.430677, ln3/ln5 = 0.682606,
    # ln4/ln5 = 0.861353
    s = LogSchedule(0.75, interval_pass=1, end_pass=3)
    np.testing.assert_allclose([s.sparsity(p) for p in range(6)],
                               [0.323008, 0.511955, 0.646015, 0.75, 0.75, 0.75], atol=1e-6)
    assert [s.is_update_step(p) for p in range(6)] == [True, True, True, True, False, False]


def test_log_schedule_follows_formula_between_and_after_updates():
    s = LogSchedule(0.9, interval_pass=3, end_pass=60)  # the seed's defaults
    for p in range(80):
        update = min(3 * (p // 3), 60)
        expected = 0.9 * np.log(2 + update / 3) / np.log(2 + 60 / 3)
        assert s.sparsity(p) == pytest.approx(expected, rel=1e-12)
        assert s.is_update_step(p) == (p % 3 == 0 and p <= 60)
    assert s.sparsity(60) == pytest.approx(0.9)


def test_cubic_schedule_hand_values():
    s = CubicSchedule(0.0, 0.8, start=0, end=300, frequency=100, unit="iteration")
    # 0.8 * (1 - (2/3)^3) = 0.8 * 19/27, 0.8 * (1 - (1/3)^3) = 0.8 * 26/27
    np.testing.assert_allclose([s.sparsity(t) for t in (0, 99, 100, 199, 200, 300, 301, 10_000)],
                               [0.0, 0.0, 0.8 * 19 / 27, 0.8 * 19 / 27, 0.8 * 26 / 27, 0.8, 0.8, 0.8])


def test_cubic_schedule_follows_formula():
    s_i, s_f, t0, dt, n = 0.1, 0.85, 7, 5, 6
    s = CubicSchedule(s_i, s_f, start=t0, end=t0 + n * dt, frequency=dt)
    for t in range(60):
        if t < t0:
            expected = 0.0
        else:
            update = t0 + min((t - t0) // dt, n) * dt
            expected = s_f + (s_i - s_f) * (1 - (update - t0) / (n * dt)) ** 3
        assert s.sparsity(t) == pytest.approx(expected, rel=1e-12), t
        assert s.is_update_step(t) == (t >= t0 and (t - t0) % dt == 0 and t <= t0 + n * dt)
    # monotone, from s_i at start to s_f at end
    values = [s.sparsity(t) for t in range(t0, 60)]
    assert values[0] == pytest.approx(s_i) and values[-1] == pytest.approx(s_f)
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_constant_schedule_prunes_once():
    s = ConstantSchedule(0.5, start=2, unit="iteration")
    assert [s.sparsity(t) for t in range(5)] == [0.0, 0.0, 0.5, 0.5, 0.5]
    assert [s.is_update_step(t) for t in range(5)] == [False, False, True, False, False]


@pytest.mark.parametrize("make, error, words", [
    (lambda: LogSchedule(1.0, 1, 3), ValueError, "LogSchedule.sparsity_upper_bound must be a finite number in [0, 1), got 1.0"),
    (lambda: LogSchedule("0.5", 1, 3), TypeError, "LogSchedule.sparsity_upper_bound must be a finite number in [0, 1), got '0.5'"),
    (lambda: LogSchedule(0.5, 0, 3), ValueError, "LogSchedule.interval_pass must be an int >= 1, got 0"),
    (lambda: LogSchedule(0.5, 2, 3), ValueError, "end_pass (3) must be a multiple of interval_pass (2)"),
    (lambda: LogSchedule(0.5, 1.0, 3), TypeError, "LogSchedule.interval_pass must be an int >= 1, got 1.0"),
    (lambda: LogSchedule(0.5, 1, 3, unit="batch"), ValueError, "LogSchedule.unit must be one of ['epoch', 'iteration'], got 'batch'"),
    (lambda: CubicSchedule(0.5, 0.4, 0, 10), ValueError, "final_sparsity (0.4) must be >= initial_sparsity"),
    (lambda: CubicSchedule(0.0, 0.5, 5, 5), ValueError, "CubicSchedule.end must be an int >= 6, got 5"),
    (lambda: CubicSchedule(0.0, 0.5, 0, 10, frequency=3), ValueError, "multiple of frequency (3)"),
    (lambda: CubicSchedule(0.0, -0.1, 0, 10), ValueError, "CubicSchedule.final_sparsity must be a finite number in [0, 1), got -0.1"),
    (lambda: ConstantSchedule(0.5, start=-1), ValueError, "ConstantSchedule.start must be an int >= 0, got -1"),
    (lambda: ConstantSchedule(True), TypeError, "ConstantSchedule.sparsity must be a finite number in [0, 1), got True"),
    (lambda: ConstantSchedule(0.5).sparsity(-1), ValueError, "ConstantSchedule.step must be an int >= 0, got -1"),
])
def test_schedules_reject_bad_arguments(make, error, words):
    with pytest.raises(error) as info:
        make()
    assert words in str(info.value)


@pytest.mark.parametrize("schedule", [
    ConstantSchedule(0.3, start=4, unit="iteration"),
    LogSchedule(0.75, interval_pass=2, end_pass=8),
    CubicSchedule(0.05, 0.9, start=10, end=110, frequency=20, unit="iteration"),
])
def test_schedule_dict_round_trip(schedule):
    rebuilt = schedule_from_dict(schedule.to_dict())
    assert rebuilt == schedule and rebuilt is not schedule
    assert [rebuilt.sparsity(t) for t in range(120)] == [schedule.sparsity(t) for t in range(120)]
    assert str(rebuilt).startswith(type(schedule).__name__ + "(")


PRUNE_YAML = """
Prune:
  schedule: {type: log, sparsity_upper_bound: 0.75, interval_pass: 1, end_pass: 3, unit: epoch}
  granularity: global
  exclude: ["conv1.*"]
  layer_types: [Conv2D, Linear]
"""


def test_prune_config_from_yaml_and_back():
    config = PruneConfig.from_dict(yaml.safe_load(PRUNE_YAML)["Prune"], source="run.yaml")
    assert config.schedule == LogSchedule(0.75, 1, 3)
    assert config.granularity == "global"
    assert config.exclude == ("conv1.*",) and config.include == ()
    assert config.layer_types == ("Conv2D", "Linear")
    assert PruneConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


@pytest.mark.parametrize("section, error, words", [
    ({"schedule": {"type": "log", "sparsity_upper_bound": 0.5}, "granularity": "layer"}, ValueError,
     "run.yaml: Prune.granularity must be one of ['parameter', 'global'], got 'layer'"),
    ({"schedule": {"type": "exp"}}, ValueError,
     "run.yaml: Prune.schedule.type must be one of ['constant', 'log', 'cubic'], got 'exp'"),
    ({"schedule": {"type": "log", "sparsity_upper_bound": 0.5, "interval": 2}}, ValueError,
     "run.yaml: Prune.schedule: unknown keys ['interval'] for a log schedule; allowed: sparsity_upper_bound, "
     "interval_pass, end_pass, unit"),
    ({"schedule": {"type": "cubic", "initial_sparsity": 0.0, "final_sparsity": 1.5, "start": 0, "end": 9}},
     ValueError, "run.yaml: Prune.schedule: CubicSchedule.final_sparsity must be a finite number in [0, 1), got 1.5"),
    ({"schedule": {"type": "constant", "sparsity": 0.5}, "sparsity": 0.5}, ValueError,
     "run.yaml: Prune: unknown keys ['sparsity']; allowed keys: schedule, granularity, include, exclude, layer_types"),
    ({"granularity": "global"}, ValueError, "run.yaml: Prune: missing key 'schedule'"),
    ({"schedule": {"type": "constant", "sparsity": 0.5}, "exclude": "fc.*"}, TypeError,
     "run.yaml: Prune.exclude must be a list of strings, got 'fc.*'"),
])
def test_prune_config_errors_name_file_key_and_allowed_values(section, error, words):
    with pytest.raises(error) as info:
        PruneConfig.from_dict(section, source="run.yaml")
    assert words in str(info.value)


def test_prune_config_rejects_a_non_schedule():
    with pytest.raises(TypeError, match="schedule must be a SparsitySchedule"):
        PruneConfig(schedule={"type": "log"})


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

@pytest.mark.parametrize("make, error, message", [
    (lambda: ConstantSchedule(1.5), ValueError, "ConstantSchedule.sparsity must be a finite number in [0, 1)"),
    (lambda: ConstantSchedule(0.5, start="a"), TypeError, "ConstantSchedule.start must be an int >= 0"),
    (lambda: ConstantSchedule(0.5).sparsity(-1), ValueError, "ConstantSchedule.step must be an int >= 0"),
    (lambda: ConstantSchedule(0.5, unit="batch"), ValueError,
     "ConstantSchedule.unit must be one of ['epoch', 'iteration']"),
    (lambda: LogSchedule(1.0, 1, 3), ValueError, "LogSchedule.sparsity_upper_bound must be a finite number in [0, 1)"),
    (lambda: LogSchedule(0.5, 0, 3), ValueError, "LogSchedule.interval_pass must be an int >= 1"),
    (lambda: LogSchedule(0.5, 1, "3"), TypeError, "LogSchedule.end_pass must be an int >= 0"),
    (lambda: LogSchedule(0.5, 1, 4).last_update_step(-1), ValueError, "LogSchedule.step must be an int >= 0"),
    (lambda: CubicSchedule("0", 0.5, 0, 10), TypeError,
     "CubicSchedule.initial_sparsity must be a finite number in [0, 1)"),
    (lambda: CubicSchedule(0.0, 0.5, "0", 10), TypeError, "CubicSchedule.start must be an int >= 0"),
    (lambda: CubicSchedule(0.0, 0.5, 0, 10.0), TypeError, "CubicSchedule.end must be an int >= 1"),
    (lambda: CubicSchedule(0.0, 0.5, 0, 10, frequency=0), ValueError, "CubicSchedule.frequency must be an int >= 1"),
    (lambda: CubicSchedule(0.0, 0.5, 0, 10, frequency=1.0), TypeError, "CubicSchedule.frequency must be an int >= 1"),
    (lambda: schedule_from_dict({"type": "bogus"}), ValueError, "schedule.type must be one of"),
    (lambda: PruneConfig.from_dict({"schedule": {"type": "constant", "sparsity": 0.5}, "bogus": 1}), ValueError,
     "Prune: unknown keys ['bogus']"),
    (lambda: PruneConfig(ConstantSchedule(0.5), include=[1]), TypeError, "Prune.include must be a list of strings"),
    (lambda: PruneConfig(ConstantSchedule(0.5), exclude={"a"}), TypeError, "Prune.exclude must be a list of strings"),
    (lambda: PruneConfig(ConstantSchedule(0.5), min_size=-1), ValueError, "Prune.min_size must be an int >= 0"),
    # without a source file the message starts with the section name
    (lambda: PruneConfig.from_dict({"granularity": "global"}), ValueError, "Prune: missing key 'schedule'"),
])
def test_schedule_and_config_errors_start_with_their_owner(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value).startswith(message)


def test_schedule_defaults_equal_ramps_and_equality():
    assert ConstantSchedule(0.5).unit == "epoch"
    assert LogSchedule(0.5).interval_pass == 3 and CubicSchedule(0.0, 0.5, 0, 10).frequency == 1
    assert CubicSchedule(0.5, 0.5, 0, 10).sparsity(10) == 0.5  # a flat ramp is allowed
    assert ConstantSchedule(0.5) == ConstantSchedule(0.5) and ConstantSchedule(0.5) != ConstantSchedule(0.6)
