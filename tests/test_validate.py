"""The validation vocabulary: one exception policy and one message form for every config and argument."""
import dataclasses

import numpy as np
import pytest

from paddle_kure import KurtosisDecay
from paddle_kure._validate import (ConfigBase, check_choice, check_dropout, check_int, check_keys, check_number,
                                  check_positive_ints)
from paddle_kure.apps.run_config import KurtosisConfig, TrainConfig
from paddle_kure.prune import LogSchedule
from paddle_kure.quant import KureConfig, PACTConfig, QuantAwareConfig
from paddle_kure.robustness import SweepConfig


@pytest.mark.parametrize("value", [0.1, 1, np.float32(0.1), np.float64(0.5), np.int64(1)])
def test_numbers_include_numpy_scalars(value):
    assert check_number("Owner", "key", value, low=0.0) == pytest.approx(float(value))


@pytest.mark.parametrize("value, error", [(True, TypeError), ("1", TypeError), (None, TypeError),
                                          (float("nan"), ValueError), (float("inf"), ValueError),
                                          (-1.0, ValueError), (0.0, ValueError)])
def test_a_wrong_type_is_a_type_error_and_a_bad_value_a_value_error(value, error):
    with pytest.raises(error, match=r"^Owner\.key must be a finite number > 0, got "):
        check_number("Owner", "key", value, low=0.0, low_open=True)


def test_interval_and_choice_messages_name_what_is_allowed():
    with pytest.raises(ValueError, match=r"^Owner\.bits must be an int in \[2, 16\], got 17$"):
        check_int("Owner", "bits", 17, low=2, high=16)
    with pytest.raises(TypeError, match=r"^Owner\.bits must be an int in \[2, 16\], got 8\.0$"):
        check_int("Owner", "bits", 8.0, low=2, high=16)
    with pytest.raises(ValueError, match=r"^Owner\.mode must be one of \['a', 'b'\], got 'c'$"):
        check_choice("Owner", "mode", "c", ("a", "b"))
    with pytest.raises(TypeError, match=r"^Owner\.mode must be one of \['a', 'b'\], got 1$"):
        check_choice("Owner", "mode", 1, ("a", "b"))


@pytest.mark.parametrize("build", [
    lambda v: KurtosisDecay(coeff=v),
    lambda v: KureConfig(coeff=v),
    lambda v: PACTConfig(l2_coeff=v),
    lambda v: KurtosisConfig(coeff=v),
    lambda v: TrainConfig(weight_decay=v),
    lambda v: LogSchedule(v, 1, 3),
    lambda v: SweepConfig(noise_stds=[v]),
])
def test_every_config_takes_numpy_scalars_and_rejects_nan_and_bools_alike(build):
    build(np.float32(0.1))
    with pytest.raises(ValueError, match="must be a finite number"):
        build(float("nan"))
    with pytest.raises(TypeError, match="must be a finite number"):
        build(True)


def test_config_base_from_dict_names_file_owner_key_and_allowed_keys():
    with pytest.raises(ValueError, match=r"^run\.yaml: KureConfig: unknown keys \['coef'\]; allowed keys: coeff, "):
        KureConfig.from_dict({"coef": 1.0}, source="run.yaml")
    with pytest.raises(TypeError, match=r"^run\.yaml: QuantAwareConfig\.use_pact must be true or false, got 'yes'$"):
        QuantAwareConfig.from_dict({"use_pact": "yes"}, source="run.yaml")
    config = QuantAwareConfig.from_dict({"quantize_op_types": ["conv2d"]})
    assert config.quantize_op_types == ("conv2d",)
    assert QuantAwareConfig.from_dict(config.to_dict()) == config


def test_config_base_validates_on_construction_and_replace():
    @dataclasses.dataclass
    class Example(ConfigBase):
        size: int = 1

        def validate(self):
            self._int("size", low=1)

    assert Example.from_dict({"size": np.int32(3)}).size == 3
    with pytest.raises(ValueError, match=r"^Example\.size must be an int >= 1, got 0$"):
        dataclasses.replace(Example(), size=0)


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

@pytest.mark.parametrize("bounds, value, message", [
    (dict(high=1.0, high_open=True), 1.0, "a finite number < 1, got 1.0"),
    (dict(high=1.0), 1.5, "a finite number <= 1, got 1.5"),
    (dict(low=0.0, high=1.0, high_open=True), 1.0, "a finite number in [0, 1), got 1.0"),
    (dict(low=0.0, high=1.0, low_open=True), 0.0, "a finite number in (0, 1], got 0.0"),
])
def test_number_bounds_open_and_closed_at_each_end(bounds, value, message):
    with pytest.raises(ValueError) as info:
        check_number("Owner", "key", value, **bounds)
    assert str(info.value) == f"Owner.key must be {message}"
    # just inside each bound is accepted
    inside = 0.999 if value >= 1.0 else 0.001
    assert check_number("Owner", "key", inside, **bounds) == inside


def test_unbounded_number_and_int_bounds():
    assert check_number("Owner", "key", -1e300) == -1e300
    with pytest.raises(TypeError, match=r"^Owner\.key must be a finite number, got 'x'$"):
        check_number("Owner", "key", "x")
    with pytest.raises(ValueError, match=r"^Owner\.n must be an int in \[0, 4\), got 4$"):
        check_int("Owner", "n", 4, low=0, high=4, high_open=True)
    assert check_int("Owner", "n", 3, low=0, high=4, high_open=True) == 3
    assert check_int("Owner", "n", 0, low=0) == 0  # the low bound of an int is always closed


def test_check_keys_takes_key_names_or_a_dataclass():
    assert check_keys(["a", "b"], {"a": 1}, "run.yaml: S") == {"a": 1}
    with pytest.raises(ValueError, match=r"^run\.yaml: S: unknown keys \['c'\]; allowed keys: a, b$"):
        check_keys(("a", "b"), {"c": 1}, "run.yaml: S")


@dataclasses.dataclass
class _Layers:
    layers: object = 2
    dropout: object = 0.1


def test_positive_ints_and_dropout_checks_name_the_config_and_field():
    check_positive_ints(_Layers(), ["layers"])
    check_dropout(_Layers(dropout=0.0), ["dropout"])
    with pytest.raises(ValueError, match=r"^_Layers\.layers must be an int >= 1, got 0$"):
        check_positive_ints(_Layers(layers=0), ["layers"])
    with pytest.raises(TypeError, match=r"^_Layers\.layers must be an int >= 1, got 2\.0$"):
        check_positive_ints(_Layers(layers=2.0), ["layers"])
    with pytest.raises(ValueError, match=r"^_Layers\.dropout must be a finite number in \[0, 1\), got 1\.0$"):
        check_dropout(_Layers(dropout=1.0), ["dropout"])
    with pytest.raises(ValueError, match=r"^_Layers\.dropout must be a finite number in \[0, 1\), got -0\.1$"):
        check_dropout(_Layers(dropout=-0.1), ["dropout"])
