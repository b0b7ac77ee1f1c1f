"""``paddle-kure robustness``: a small trained SmallCNN on a slice of Fashion-MNIST."""
import csv
import json

import numpy as np
import paddle
import pytest

from paddle_kure.cli import main as cli_main
from paddle_kure.apps.robustness import load_model
from paddle_kure.data import load_fashion_mnist
from paddle_kure.models import SmallCNN
from paddle_kure.train import fit, make_optimizer

TEST_SIZE = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SmallCNN trained one epoch on 1024 Fashion-MNIST images, saved as run saves fp32.pdparams."""
    paddle.disable_static()
    paddle.seed(0)
    data = load_fashion_mnist(val_size=300, train_size=1024, test_size=TEST_SIZE, seed=2024)
    model = SmallCNN()
    fit(model, make_optimizer("adam", 2e-3, model.parameters()), data.train_images, data.train_labels, 1, 64,
        progress=False)
    path = tmp_path_factory.mktemp("model") / "fp32.pdparams"
    paddle.save(model.state_dict(), str(path))
    return str(path), data


@pytest.fixture(scope="module")
def swept(trained, tmp_path_factory):
    path, _ = trained
    prefix = str(tmp_path_factory.mktemp("out") / "robustness")
    code = cli_main(["robustness", path, "--bits", "4", "--ratios", "0.8", "1.0", "--noise-stds", "0.1",
                     "--seeds", "2", "--val-size", "300", "--calib-size", "200", "--accuracy-fractions", "0.6", "0.8", "1.0", "--test-size", str(TEST_SIZE),
                     "--batch-size", "150", "--output", prefix, "--no-progress"])
    assert code == 0
    with open(prefix + ".json") as f:
        return prefix, json.load(f)


def _plain_quantized_accuracy(state, data, bits, per_channel):
    """Accuracy after quantizing every conv/fc weight at its abs-max step, computed
    here from the formula, without paddle_kure.robustness."""
    qmax = 2 ** (bits - 1) - 1
    model = SmallCNN()
    quantized = {}
    for key, value in state.items():
        w = value.numpy()
        if key.endswith(".weight"):
            # Conv2D weights are [out, in, kh, kw], Linear weights [in, out]
            axes = (tuple(range(1, w.ndim)) if key.startswith("conv") else (0,)) if per_channel else None
            w64 = w.astype(np.float64)
            s = np.abs(w64).max(axis=axes, keepdims=True)
            w = (np.clip(np.round(w64 / s * qmax), -qmax, qmax) * s / qmax).astype(w.dtype)
        quantized[key] = w
    model.set_state_dict(quantized)
    model.eval()
    logits = model(paddle.to_tensor(data.test_images)).numpy()
    return float((logits.argmax(-1) == data.test_labels).mean())


def test_abs_max_at_ratio_one_is_plain_quantization(trained, swept):
    path, data = trained
    _, result = swept
    (label, model_result), = result["models"].items()
    assert label == "fp32.pdparams"
    records = model_result["records"]
    state = paddle.load(path)
    for per_channel in (False, True):
        record = next(r for r in records if r["per_channel"] == per_channel and r["scale_method"] == "abs_max"
                      and r["perturbation"] == "ratio" and r["value"] == 1.0)
        assert record["scale_ratio"] == 1.0
        assert record["accuracy"] == pytest.approx(_plain_quantized_accuracy(state, data, 4, per_channel), abs=1e-9)
    model = load_model(path)
    logits = model(paddle.to_tensor(data.test_images)).numpy()
    assert model_result["fp32_test_acc"] == pytest.approx(float((logits.argmax(-1) == data.test_labels).mean()))
    assert model_result["fp32_test_acc"] > 0.5  # trained, not chance
    assert sorted(model_result["weight_kurtosis"]) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]


def test_sweep_plan_and_scale_choices(swept):
    _, result = swept
    records = next(iter(result["models"].values()))["records"]
    # 2 granularities x (3 methods x 2 ratios + 1 std x 2 seeds)
    assert len(records) == 2 * (3 * 2 + 2)
    for per_channel in (False, True):
        ratios = {r["scale_method"]: r["scale_ratio"] for r in records if r["per_channel"] == per_channel}
        assert ratios["mse"] < 1.0  # 4 bits: least squared error clips
        assert 0.6 <= ratios["accuracy"] <= 1.0  # within the searched fractions
    noise = [r for r in records if r["perturbation"] == "noise"]
    assert {r["seed"] for r in noise} == {0, 1} and {r["scale_method"] for r in noise} == {"abs_max"}
    assert result["setup"]["calib_size"] == 200 and "test=300" in result["setup"]["data"]


def test_table_csv_and_plot_written(swept):
    prefix, result = swept
    with open(prefix + ".md") as f:
        text = f.read()
    for heading in ("Unperturbed scale choices", "Fixed ratios", "Noise"):
        assert heading in text
    assert "| fp32.pdparams | " in text and "x0.8 | x1 |" in text
    with open(prefix + ".csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(next(iter(result["models"].values()))["records"])
    assert {"model", "bits", "per_channel", "scale_method", "perturbation", "value", "seed", "accuracy",
            "scale_ratio"} <= set(rows[0])
    with open(prefix + ".png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_qat_checkpoint_reads_latent_weights(tmp_path):
    from paddle_kure.quant import QuantAwareConfig, prepare_qat

    paddle.seed(1)
    qat = prepare_qat(SmallCNN(), QuantAwareConfig(weight_bits=4, activation_bits=4))
    path = str(tmp_path / "model.pdparams")
    paddle.save(qat.state_dict(), path)
    model = load_model(path)
    np.testing.assert_array_equal(model.fc1.weight.numpy(), qat.fc1._layer.weight.numpy())
    np.testing.assert_array_equal(model.conv2.bias.numpy(), qat.conv2._layer.bias.numpy())


def test_bad_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found.*fp32.pdparams"):
        load_model(str(tmp_path / "missing.pdparams"))
    with pytest.raises(ValueError, match="inference model"):
        load_model(str(tmp_path / "export" / "fp32.pdmodel"))
    other = str(tmp_path / "linear.pdparams")
    paddle.save(paddle.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(ValueError, match=r"not a state dict of the default SmallCNN: missing \['conv1.bias'"):
        load_model(other)
    garbage = tmp_path / "garbage.pdparams"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a Paddle state dict"):
        load_model(str(garbage))
    wide = str(tmp_path / "wide.pdparams")
    paddle.save(SmallCNN(hidden=64).state_dict(), wide)
    with pytest.raises(ValueError, match="shapes differ.*fc1.weight"):
        load_model(wide)


@pytest.mark.parametrize("extra, text", [
    (["--bits", "1"], "SweepConfig.bits must be an int in [2, 16], got 1"),
    (["--bits", "33"], "SweepConfig.bits must be an int in [2, 16], got 33"),
    (["--scale-methods", "percentile"], "scale_methods"),
    (["--ratios", "0"], "SweepConfig.factors must be a finite number > 0, got 0.0"),
    (["--seeds", "0"], "--seeds: must be an int >= 1, got 0"),
    (["--calib-size", "500"], "--calib-size: must be an int in [1, 300], got 500"),
    (["--batch-size", "0"], "--batch-size: must be an int >= 1, got 0"),
    (["--test-size", "20000"], "--test-size: must be an int in [0, 10000], got 20000"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(trained, tmp_path, capsys, extra, text):
    path, _ = trained
    rc = cli_main(["robustness", path, "--val-size", "300", "--test-size", "50", "--noise-stds",
                   "--calib-size", "100", "--output", str(tmp_path / "r"), "--no-progress", "--bits", "4",
                   "--ratios", "1.0", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("paddle-kure: error: ") and text in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("r.*"))  # nothing written


def test_unknown_granularity_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        cli_main(["robustness", "m.pdparams", "--granularity", "per-row"])
    assert "per-row" in capsys.readouterr().err
