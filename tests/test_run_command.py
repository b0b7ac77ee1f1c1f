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
    assert list(records) == ["fp32", "fp32_more", "fp32_kure", "ptq_w8a8", "ptq_kure_w8a8", "qat_w8a8", "qat_pact_w8a8",
                             "qat_kure_w8a8", "qat_kure_pact_w8a8"]
    # the control trained the QAT epochs further, from the FP32 weights
    assert len(records["fp32_more"]["history"]) == TINY["TrainConfig"]["qat_epochs"]
    data = load_fashion_mnist(val_size=200, train_size=256, test_size=300, seed=11)
    for stage, record in records.items():
        prefix = str(out / record["export"])
        assert record["test_acc"] == predictor_accuracy(prefix, data.test_images, data.test_labels), stage
        assert record["val_acc"] == predictor_accuracy(prefix, data.val_images, data.val_labels), stage
        assert record["test_acc"] > 0.2, stage  # 10 classes: chance is 0.1; 4 steps of training
    assert records["qat_kure_w8a8"]["kure_weights"] == ["conv2.weight", "fc1.weight", "fc2.weight"]
    assert records["qat_w8a8"]["kure_weights"] == []
    # QAT's wrapped layers are recorded under the FP32 names, so the kurtosis figure compares them
    assert list(records["qat_kure_w8a8"]["weight_kurtosis"]) == list(records["fp32"]["weight_kurtosis"])
    # the Prune section's masks were applied during QAT: fc1's weight is half zeros
    assert records["qat_w8a8"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    table = (out / "results.md").read_text()
    assert "## Sparsity of qat_w8a8 (Prune)" in table and "| fc1.weight |" in table
    fp32_more = records["fp32_more"]
    assert f"| FP32, +QAT epochs | {100 * fp32_more['test_acc']:.2f} ({100 * fp32_more['val_acc']:.2f}) |" in table
    titles = {"ptq_w8a8": "PTQ of FP32", "ptq_kure_w8a8": "PTQ of FP32+KURE", "qat_pact_w8a8": "QAT+PACT",
              "fp32_kure": "FP32+KURE"}
    for stage, title in titles.items():
        r = records[stage]
        assert f"| {title} | {100 * r['test_acc']:.2f} ({100 * r['val_acc']:.2f}) |" in table
    for name in ("accuracy.png", "kurtosis.png", "config_used.yaml", "run.log"):
        assert (out / name).stat().st_size > 0
    used = yaml.safe_load((out / "config_used.yaml").read_text())
    assert used["Global"]["train_size"] == 256 and used["Prune"]["include"] == ["fc1.weight"]


def exported_scales(prefix, names):
    """The quantization scales ``NAME@scale`` stored in an exported PTQ model."""
    import paddle

    paddle.enable_static()
    try:
        with paddle.pir_utils.OldIrGuard():
            scope = paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                paddle.static.load_inference_model(prefix, paddle.static.Executor(paddle.CPUPlace()))
                return [np.array(scope.find_var(name + "@scale").get_tensor()).ravel() for name in names]
    finally:
        paddle.disable_static()


def test_ptq_of_the_kure_model_quantizes_the_kure_trained_weights(finished_run):
    import paddle

    _, out, results = finished_run
    records = {r["stage"]: r for r in results["results"]}
    fp32, kure = records["fp32"], records["fp32_kure"]
    # trained as long as FP32, with KURE on the chosen weights: their kurtosis moved toward the target
    assert len(kure["history"]) == len(fp32["history"]) == TINY["TrainConfig"]["epochs"]
    assert kure["kure_weights"] == ["conv2.weight", "fc1.weight", "fc2.weight"]
    distance = {r["method"]: sum(abs(r["weight_kurtosis"][w] - 1.8) for w in kure["kure_weights"])
                for r in (fp32, kure)}
    assert distance["fp32_kure"] < distance["fp32"] - 0.02, distance
    # channel-wise abs-max weight scales (fc1: one per output column) are those of the model each PTQ names
    for stage, source in (("ptq_w8a8", "fp32"), ("ptq_kure_w8a8", "fp32_kure")):
        assert records[stage]["fp32_model"] == source
        fc1 = np.abs(np.asarray(paddle.load(str(out / f"{source}.pdparams"))["fc1.weight"])).max(axis=0)
        other = "fp32_kure" if source == "fp32" else "fp32"
        fc1_other = np.abs(np.asarray(paddle.load(str(out / f"{other}.pdparams"))["fc1.weight"])).max(axis=0)
        (scale,) = exported_scales(str(out / records[stage]["export"]), ["linear_0.w_0"])
        np.testing.assert_allclose(scale, fc1, rtol=1e-6)
        assert np.abs(scale - fc1_other).max() > 1e-4


def test_ptq_calibrates_with_the_configured_algorithm(finished_run, tmp_path):
    """QuantPost.algo reaches quant_post_static: the input's activation scale is the largest
    |pixel| of the calibration images with 'abs_max' and, with 'avg', PaddleSlim's mean over
    images of each image's largest |pixel|."""
    import shutil

    from paddle_kure.apps.run import RunPipeline
    from paddle_kure.apps.run_config import config_from_dict

    _, out, _ = finished_run
    shutil.copy(out / "fp32.pdparams", tmp_path / "fp32.pdparams")
    q = TINY["QuantPost"]
    expected = {}
    for algo in ("abs_max", "avg"):
        config = config_from_dict(dict(TINY, QuantPost=dict(q, algo=algo)))
        run = RunPipeline(config, str(tmp_path), resume=True, progress=False)
        calib = run.data.train_images[:q["batch_nums"] * q["batch_size"]]
        expected = {"abs_max": np.abs(calib).max(),
                    "avg": np.abs(calib).reshape(len(calib), -1).max(axis=1).mean()}
        record = run.ptq("ptq", 8, 8)
        assert record["calibration"] == dict(q, algo=algo)
        (image_scale,) = exported_scales(str(tmp_path / record["export"]), ["image"])
        np.testing.assert_allclose(image_scale, [expected[algo]], rtol=1e-6)
    assert expected["abs_max"] - expected["avg"] > 1e-4  # the two algorithms are told apart


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


def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TrainConfig: {epochs: 0}\n")
    assert cli_main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"paddle-kure: error: {bad}: TrainConfig.epochs must be an int >= 1, got 0\n"
    with pytest.raises(ValueError, match="bad.yaml: TrainConfig.epochs"):  # --debug: the exception itself
        cli_main(["--debug", "run", str(bad)])


def _twelve_linears():
    """layer0..layer11, Linear(4, 4): equal weights of kurtosis 1.8-ish, but layer5's one-hot (kurtosis ~13)."""
    import paddle

    model = paddle.nn.Layer()
    for i in range(12):
        setattr(model, f"layer{i}", paddle.nn.Linear(4, 4))
        weight = np.linspace(-1.0, 1.0, 16).reshape(4, 4) if i != 5 else np.eye(1, 16).reshape(4, 4)
        getattr(model, f"layer{i}").weight.set_value(weight.astype("float32"))
    return model


def test_kure_weight_choice_include_exclude_layer_types_and_automatic_exclusion():
    model = _twelve_linears()
    weights = [f"layer{i}.weight" for i in range(12)]
    assert choose_kure_weights(model, KurtosisConfig(exclude=())) == weights
    # 11 equal values and one outlier: the outlier lies sqrt(11) = 3.3 std from the mean
    chosen = choose_kure_weights(model, KurtosisConfig(exclude=(), auto_exclude=True))
    assert chosen == [w for w in weights if w != "layer5.weight"]
    # the band is computed after the patterns: of 9 tensors the outlier is only sqrt(8) = 2.8 std away
    chosen = choose_kure_weights(model, KurtosisConfig(exclude=("layer1*",), auto_exclude=True))
    assert chosen == [f"layer{i}.weight" for i in (0, 2, 3, 4, 5, 6, 7, 8, 9)]
    chosen = choose_kure_weights(model, KurtosisConfig(exclude=("layer1*",), auto_exclude=True, num_std=2.5))
    assert chosen == [f"layer{i}.weight" for i in (0, 2, 3, 4, 6, 7, 8, 9)]
    assert choose_kure_weights(model, KurtosisConfig(include=("layer0.*",), exclude=())) == \
        ["layer0.weight", "layer0.bias"]
    assert choose_kure_weights(model, KurtosisConfig(exclude=(), layer_types=("Linear",))) == weights
    with pytest.raises(ValueError, match="chose no weight"):
        choose_kure_weights(model, KurtosisConfig(exclude=(), layer_types=("Conv2D",)))
    with pytest.raises(ValueError, match=r"<config>: Kurtosis: include \[\], exclude \['\*'\], layer_types \[\], "
                                         r"min_size 0 and auto_exclude False chose no weight \(FP32 kurtosis: "
                                         r"layer0.weight \d"):
        choose_kure_weights(model, KurtosisConfig(exclude=("*",)))
    # a pattern that names nothing is an error, in the config's own words (a glob, not a regex)
    with pytest.raises(ValueError, match=r"^c.yaml: Kurtosis.exclude: no parameter is named \['conv1\.\*'\] "
                                         r".*; the model has \['layer0.weight', 'layer0.bias'"):
        choose_kure_weights(model, KurtosisConfig(), "c.yaml")  # the default "conv1.*" names a SmallCNN layer
    with pytest.raises(ValueError, match=r"Kurtosis.include: no parameter is named \['layer12\.\*'\]"):
        choose_kure_weights(model, KurtosisConfig(include=("layer1?.*", "layer12.*"), exclude=()))
