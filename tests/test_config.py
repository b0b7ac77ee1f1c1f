"""The YAML config loader: PaddleSlim section names, validation, errors naming key and file."""
import os

import pytest
import yaml

from paddle_kure.apps.run_config import ConfigError, RunConfig, config_from_dict, default_config_path, load_config
from paddle_kure.quant import KureConfig, PACTConfig, QuantAwareConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_default_config_matches_its_yaml_and_the_top_level_copy():
    path = default_config_path()
    with open(path) as f:
        raw = yaml.safe_load(f)
    config = load_config(path)
    assert config.TrainConfig.epochs == raw["TrainConfig"]["epochs"]
    assert config.Global.train_size == raw["Global"]["train_size"]
    assert config.Kurtosis.exclude == tuple(raw["Kurtosis"]["exclude"])
    assert config.precisions() == list(zip(raw["QuantAware"]["weight_bits"], raw["QuantAware"]["activation_bits"]))
    assert config.precisions() == [(8, 8), (4, 4)]
    assert config.methods() == ["ptq", "ptq_kure", "qat", "qat_pact", "qat_kure", "qat_kure_pact"]
    assert config.QuantPost.algo == raw["QuantPost"]["algo"]
    with open(os.path.join(ROOT, "configs", "default.yaml")) as f, open(path) as g:
        assert f.read() == g.read()


def test_quant_config_per_precision_uses_paddleslim_keys():
    config = load_config(default_config_path())
    q = config.quant_config(4, 4, use_pact=True)
    assert isinstance(q, QuantAwareConfig)
    assert (q.weight_bits, q.activation_bits, q.use_pact) == (4, 4, True)
    assert q.weight_quantize_type == "channel_wise_abs_max"
    assert q.quantize_op_types == ("conv2d", "mul", "matmul", "matmul_v2")


def test_empty_file_is_refused_and_configs_round_trip(tmp_path):
    # the dataclass defaults are not the packaged experiment: an empty file must not run them silently
    with pytest.raises(ConfigError, match="config is empty; start from a copy of .*default.yaml"):
        load_config(write(tmp_path, ""))
    config = config_from_dict({}, source="x")
    assert config == RunConfig(source="x")
    again = config_from_dict(load_config(default_config_path()).to_dict(), source="x")
    assert again.to_dict() == load_config(default_config_path()).to_dict()


def test_without_pact_the_pact_arms_are_dropped(tmp_path):
    config = load_config(write(tmp_path, {"QuantAware": {"use_pact": False, "weight_bits": 8}}))
    assert config.methods() == ["ptq", "ptq_kure", "qat", "qat_kure"]
    assert config.precisions() == [(8, 8)]


@pytest.mark.parametrize("data, words", [
    ({"Gloabl": {}}, ["unknown section", "Gloabl", "Global"]),
    ({"TrainConfig": {"epoch": 2}}, ["TrainConfig", "epoch", "allowed keys"]),
    ({"TrainConfig": {"epochs": "two"}}, ["TrainConfig.epochs", "an int", "'two'"]),
    ({"TrainConfig": {"epochs": 0}}, ["TrainConfig.epochs", ">= 1"]),
    ({"TrainConfig": {"optimizer": "adamw"}}, ["TrainConfig.optimizer", "adam", "momentum", "sgd"]),
    ({"TrainConfig": {"learning_rate": -1e-3}}, ["TrainConfig.learning_rate", "in (0, 3.40282e+38]"]),
    ({"TrainConfig": {"learning_rate": 1e39}}, ["TrainConfig.learning_rate", "in (0, 3.40282e+38]"]),
    ({"Global": {"seed": 2 ** 32}}, ["Global.seed", "an int in [0, 4294967295]"]),
    ({"Global": {"train_size": 58000, "val_size": 5000}}, ["Global.train_size", "60000"]),
    ({"Global": {"download": "yes"}}, ["Global.download", "true or false"]),
    ({"QuantAware": {"weight_bits": 3}}, ["QuantAware", "weight_bits", "[4, 8]"]),
    ({"QuantAware": {"weight_bits": [8, 4], "activation_bits": [8]}}, ["QuantAware", "same number"]),
    ({"QuantAware": {"weight_quantize_type": "minmax"}}, ["QuantAware", "weight_quantize_type", "abs_max"]),
    ({"QuantAware": {"quantize_bits": 8}}, ["QuantAware", "quantize_bits", "unknown"]),
    ({"QuantPost": {"algo": "kl"}}, ["QuantPost.algo", "'abs_max', 'avg', 'KL', 'hist', 'mse'", "'kl'"]),
    ({"QuantPost": {"algo": 1}}, ["QuantPost.algo", "one of"]),
    ({"QuantPost": {"batch_nums": 0}}, ["QuantPost.batch_nums", ">= 1"]),
    ({"QuantPost": {"batch_nums": 2.5}}, ["QuantPost.batch_nums", "an int"]),
    ({"Kurtosis": {"target": 0.5}}, ["Kurtosis.target", "in (1, 3.40282e+38]"]),
    ({"Kurtosis": {"exclude": "conv1.*"}}, ["Kurtosis.exclude", "list of strings"]),
    ({"Kurtosis": {"on_weights": False, "on_activations": False}}, ["Kurtosis", "on_weights", "on_activations"]),
    ({"Kurtosis": [1, 2]}, ["Kurtosis", "mapping"]),
    ({"Prune": {"schedule": {"type": "exp"}}}, ["Prune", "schedule", "type", "log"]),
    ({"Prune": {"granularity": "global"}}, ["Prune", "schedule"]),
])
def test_bad_values_name_the_key_and_the_file(tmp_path, data, words):
    path = write(tmp_path, data, "bad_config.yaml")
    with pytest.raises((ValueError, TypeError)) as info:
        load_config(path)
    message = str(info.value)
    assert "bad_config.yaml" in message
    for word in words:
        assert word in message, (word, message)


def test_prune_section_builds_the_prune_config(tmp_path):
    from paddle_kure.prune import PruneConfig

    prune = {"schedule": {"type": "log", "sparsity_upper_bound": 0.5, "interval_pass": 1, "end_pass": 2},
             "exclude": ["conv1.*"]}
    config = load_config(write(tmp_path, {"Prune": prune}))
    assert isinstance(config.Prune, PruneConfig)
    assert config.Prune.exclude == ("conv1.*",)
    assert config.Prune.schedule.sparsity_upper_bound == 0.5
    assert config_from_dict(config.to_dict()).Prune == config.Prune


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_config(write(tmp_path, "Global: {seed: [1,", "broken.yaml"))
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(str(tmp_path / "nowhere.yaml"))
    with pytest.raises(ConfigError, match="list.yaml.*mapping of sections"):
        load_config(write(tmp_path, "- 1\n- 2\n", "list.yaml"))


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

@pytest.mark.parametrize("make, error, message", [
    (lambda: QuantAwareConfig(weight_bits=True), TypeError, "QuantAwareConfig.weight_bits must be an int"),
    (lambda: QuantAwareConfig(activation_bits=5), ValueError, "QuantAwareConfig.activation_bits must be one of"),
    (lambda: QuantAwareConfig(weight_quantize_type="x"), ValueError, "QuantAwareConfig.weight_quantize_type must be"),
    (lambda: QuantAwareConfig(activation_quantize_type="x"), ValueError,
     "QuantAwareConfig.activation_quantize_type must be"),
    (lambda: QuantAwareConfig(quantize_op_types="mul"), TypeError, "QuantAwareConfig.quantize_op_types must be a list"),
    (lambda: QuantAwareConfig(quantize_op_types=["x"]), ValueError, "QuantAwareConfig.quantize_op_types must be one"),
    (lambda: QuantAwareConfig.from_dict({"weight_bits": 3}), ValueError, "QuantAwareConfig.weight_bits must be one of"),
    (lambda: QuantAwareConfig.from_dict({"bogus": 3}), ValueError, "QuantAwareConfig: unknown keys"),
    (lambda: PACTConfig(init="max"), ValueError, "PACTConfig.init must be one of ['abs_max', 'percentile']"),
    (lambda: PACTConfig(init=0.0), ValueError, "PACTConfig.init must be a finite number > 0, got 0.0"),
    (lambda: PACTConfig(init=True), TypeError, "PACTConfig.init must be a finite number"),
    (lambda: PACTConfig(init=float("inf")), ValueError, "PACTConfig.init must be a finite number > 0, got inf"),
    (lambda: PACTConfig(percentile=0.0), ValueError,
     "PACTConfig.percentile must be a finite number in (0, 100], got 0.0"),
    (lambda: PACTConfig(percentile=100.5), ValueError,
     "PACTConfig.percentile must be a finite number in (0, 100], got 100.5"),
    (lambda: PACTConfig(percentile="99"), TypeError, "PACTConfig.percentile must be a finite number"),
    (lambda: PACTConfig(l2_coeff=-0.1), ValueError, "PACTConfig.l2_coeff must be a finite number >= 0, got -0.1"),
    (lambda: PACTConfig(l2_coeff=None), TypeError, "PACTConfig.l2_coeff must be a finite number"),
    (lambda: PACTConfig(learning_rate=0.0), ValueError,
     "PACTConfig.learning_rate must be a finite number > 0, got 0.0"),
    (lambda: PACTConfig(learning_rate="1"), TypeError, "PACTConfig.learning_rate must be a finite number"),
    (lambda: KureConfig(coeff=-1.0), ValueError, "KureConfig.coeff must be a finite number >= 0, got -1.0"),
    (lambda: KureConfig(coeff="1"), TypeError, "KureConfig.coeff must be a finite number"),
    (lambda: KureConfig(target=1.0), ValueError, "KureConfig.target must be a finite number > 1, got 1.0"),
    (lambda: KureConfig(target=None), TypeError, "KureConfig.target must be a finite number"),
    (lambda: KureConfig(l2_coeff=-1e-4), ValueError, "KureConfig.l2_coeff must be a finite number >= 0, got -0.0001"),
    (lambda: KureConfig(l2_coeff="0"), TypeError, "KureConfig.l2_coeff must be a finite number"),
    (lambda: KureConfig(params="fc.weight"), TypeError, "KureConfig.params must be None, a list"),
    (lambda: KureConfig(params={"fc.weight"}), TypeError, "KureConfig.params must be None, a list"),
    (lambda: KureConfig(params=["fc.weight", 3]), TypeError, "KureConfig.params must be None, a list"),
    (lambda: KureConfig.from_dict({"coeff": -1.0}, source="run.yaml"), ValueError,
     "run.yaml: KureConfig.coeff must be a finite number >= 0, got -1.0"),
])
def test_quant_config_errors_name_class_and_field(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value).startswith(message)


def test_quant_config_accepts_the_bounds_and_converts():
    PACTConfig(init="abs_max", percentile=100, l2_coeff=0.0, learning_rate=1e-3)
    PACTConfig(init=0.5)
    KureConfig(coeff=0.0, target=1.01, l2_coeff=0.0, params=["fc.weight"])
    KureConfig(params=lambda name, p: True)
    config = QuantAwareConfig(quantize_op_types=["mul"])
    assert config.quantize_op_types == ("mul",) and config.dygraph_layer_types() == ["Linear"]
    assert QuantAwareConfig.from_dict({}).to_dict()["weight_bits"] == 8
    assert PACTConfig().to_dict() == {"init": "percentile", "percentile": 99.99, "l2_coeff": 0.0, "learning_rate": 1.0}


def test_quant_config_errors_without_a_source_name_none():
    with pytest.raises(ValueError) as info:
        QuantAwareConfig.from_dict({"weight_bits": 3})
    assert str(info.value).endswith("got 3")


def test_quantize_op_types_must_be_a_list():
    with pytest.raises(TypeError, match="QuantAwareConfig.quantize_op_types must be a list"):
        QuantAwareConfig(quantize_op_types={"mul"})
