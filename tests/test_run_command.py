"""``paddle-kure run`` end to end on a tiny slice of Fashion-MNIST, its resume, and
the KURE weight selection."""
import json
import os

import numpy as np
import pytest
import yaml

from paddle_kure.cli import main as cli_main
from paddle_kure.apps.run import choose_kure_weights
from paddle_kure.apps.run_config import KurtosisConfig

TINY = {
    "Global": {"seed": 11, "train_size": 256, "val_size": 200, "test_size": 300},
    "TrainConfig": {"epochs": 1, "qat_epochs": 1, "batch_size": 64},
    "QuantAware": {"weight_bits": 8, "activation_bits": 8},
    "QuantPost": {"batch_nums": 2, "batch_size": 32},
    "Kurtosis": {"on_activations": True},
    "Prune": {"schedule": {"type": "constant", "sparsity": 0.5}, "include": ["fc1.weight"]},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "out"
    assert cli_main(["run", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    with open(out / "results.json") as f:
        return config, out, json.load(f)


def predictor_accuracy(prefix, images, labels):
    """Accuracy of an exported model, straight from paddle.inference."""
    from paddle import inference

    cfg = inference.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    cfg.disable_glog_info()
    predictor = inference.create_predictor(cfg)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(np.ascontiguousarray(images))
    predictor.run()
    logits = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    return float((logits.argmax(1) == labels).mean())


def test_run_writes_every_arm_evaluated_by_paddle_inference(finished_run):
    from paddle_kure.data import load_fashion_mnist

    _, out, results = finished_run
    records = {r["stage"]: r for r in results["results"]}
    assert list(records) == ["fp32", "fp32_more", "ptq_w8a8", "qat_w8a8", "qat_kure_w8a8", "qat_kure_pact_w8a8"]
    # the control trained the QAT epochs further, from the FP32 weights
    assert len(records["fp32_more"]["history"]) == TINY["TrainConfig"]["qat_epochs"]
    data = load_fashion_mnist(val_size=200, train_size=256, test_size=300, seed=11)
    for stage, record in records.items():
        prefix = str(out / record["export"])
        assert record["test_acc"] == predictor_accuracy(prefix, data.test_images, data.test_labels), stage
        assert record["val_acc"] == predictor_accuracy(prefix, data.val_images, data.val_labels), stage
        assert record["test_acc"] > 0.3, stage  # 10 classes: chance is 0.1
    assert records["qat_kure_w8a8"]["kure_weights"] == ["conv2.weight", "fc1.weight", "fc2.weight"]
    assert records["qat_w8a8"]["kure_weights"] == []
    # the Prune section's masks were applied during QAT: fc1's weight is half zeros
    assert records["qat_w8a8"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    table = (out / "results.md").read_text()
    assert "## Sparsity of qat_w8a8 (Prune)" in table and "| fc1.weight |" in table
    fp32_more = records["fp32_more"]
    assert f"| FP32, +QAT epochs | {100 * fp32_more['test_acc']:.2f} ({100 * fp32_more['val_acc']:.2f}) |" in table
    assert f"| PTQ | {100 * records['ptq_w8a8']['test_acc']:.2f} ({100 * records['ptq_w8a8']['val_acc']:.2f}) |" in table
    for name in ("accuracy.png", "kurtosis.png", "config_used.yaml", "run.log"):
        assert (out / name).stat().st_size > 0
    used = yaml.safe_load((out / "config_used.yaml").read_text())
    assert used["Global"]["train_size"] == 256 and used["Prune"]["include"] == ["fc1.weight"]


def test_resume_skips_finished_stages_and_finishes_an_interrupted_one(finished_run):
    config, out, results = finished_run
    before = {r["stage"]: r for r in results["results"]}
    os.remove(out / "stages" / "qat_kure_w8a8.json")  # as if killed while exporting
    assert cli_main(["run", str(config), "--output-dir", str(out), "--resume", "--no-progress"]) == 0
    with open(out / "results.json") as f:
        after = {r["stage"]: r for r in json.load(f)["results"]}
    assert after["qat_kure_w8a8"]["test_acc"] == before["qat_kure_w8a8"]["test_acc"]
    assert after["qat_kure_w8a8"]["history"] == before["qat_kure_w8a8"]["history"]
    log = (out / "run.log").read_text()
    assert "qat_w8a8: finished in an earlier run, skipped" in log
    assert "qat_kure_w8a8: finished in an earlier run" not in log


def test_bad_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TrainConfig: {epochs: 0}\n")
    with pytest.raises(ValueError, match="bad.yaml: TrainConfig.epochs"):
        cli_main(["run", str(bad)])


def test_kure_weight_choice_include_exclude_and_automatic_exclusion():
    shapes = {f"layer{i}.weight": [4, 4] for i in range(12)}
    shapes["layer0.bias"] = [4]
    values = {name: 3.0 + 0.01 * i for i, name in enumerate(shapes)}
    values["layer5.weight"] = 100.0  # 11/sqrt(12) = 3.2 std above the mean of the 12
    assert choose_kure_weights(shapes, values, KurtosisConfig(exclude=())) == [f"layer{i}.weight" for i in range(12)]
    chosen = choose_kure_weights(shapes, values, KurtosisConfig(exclude=(), auto_exclude=True))
    assert chosen == [f"layer{i}.weight" for i in range(12) if i != 5]
    # the band is computed after the patterns: of 9 tensors one outlier is only 8/3 std away
    chosen = choose_kure_weights(shapes, values, KurtosisConfig(exclude=("layer1*",), auto_exclude=True))
    assert chosen == [f"layer{i}.weight" for i in (0, 2, 3, 4, 5, 6, 7, 8, 9)]
    chosen = choose_kure_weights(shapes, values, KurtosisConfig(exclude=("layer1*",), auto_exclude=True,
                                                                auto_exclude_std=2.5))
    assert chosen == [f"layer{i}.weight" for i in (0, 2, 3, 4, 6, 7, 8, 9)]
    assert choose_kure_weights(shapes, values, KurtosisConfig(include=("layer0.*",), exclude=())) == \
        ["layer0.weight", "layer0.bias"]
    with pytest.raises(ValueError, match="chose no weight"):
        choose_kure_weights(shapes, values, KurtosisConfig(exclude=("*",)))
