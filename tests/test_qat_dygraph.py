"""Dygraph QAT with KURE and PACT, PTQ, export and paddle.inference, on a slice
of Fashion-MNIST."""
import gzip
import os

import numpy as np
import paddle
import pytest
from graph_modes import static_mode

from paddle_kure.quant import (InferenceModel, KureConfig, PACTConfig, QuantAwareConfig, apply_kure,
                               export_quantized, post_training_quantize, prepare_qat)
from paddle_kure.data.vision import DEFAULT_DIR
from paddle_kure.regularizer import KurtosisDecay

SPEC = [paddle.static.InputSpec([None, 1, 28, 28], "float32")]


@pytest.fixture(scope="module")
def fmnist():
    """768 test-set images, normalized: 512 to train on, 256 to compare outputs."""
    if not os.path.exists(f"{DEFAULT_DIR}/t10k-images-idx3-ubyte.gz"):
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    with gzip.open(f"{DEFAULT_DIR}/t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:768]
    with gzip.open(f"{DEFAULT_DIR}/t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:768].astype("int64")
    images = ((images / 255.0 - 0.2860) / 0.3530).astype("float32")
    return images[:512], labels[:512], images[512:]


class SmallCNN(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(1, 8, 3, stride=2)
        self.conv2 = paddle.nn.Conv2D(8, 16, 3, stride=2)
        self.fc = paddle.nn.Linear(16 * 6 * 6, 10)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.conv1(x))
        x = paddle.nn.functional.relu(self.conv2(x))
        return self.fc(paddle.flatten(x, 1))


def _train(model, images, labels, steps=16, lr=2e-3):
    opt = paddle.optimizer.Adam(lr, parameters=model.parameters())
    model.train()
    for step in range(steps):
        start = (step * 64) % len(images)
        x, y = paddle.to_tensor(images[start:start + 64]), paddle.to_tensor(labels[start:start + 64])
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()


def _eval(model, images):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(images)).numpy()


def _op_attrs(path, op_type, attr):
    with static_mode("legacy"):
        program, _, _ = paddle.static.load_inference_model(path, paddle.static.Executor(paddle.CPUPlace()))
    return [op.attr(attr) for op in program.global_block().ops if op.type == op_type]


def _kurtosis_decay_grad(w, target):
    """d/dw (K(w) - target)^2 in numpy (REFERENCE.md section 2)."""
    d = w.astype("float64").ravel() - w.mean()
    m2, m3, m4 = (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()
    k = m4 / m2 ** 2
    dk = 4.0 / (d.size * m2 ** 2) * (d ** 3 - m3 - k * m2 * d)
    return (2 * (k - target) * dk).reshape(w.shape)


def test_config_validation_names_key_allowed_values_and_file():
    with pytest.raises(ValueError, match=r"run.yaml: QuantAwareConfig.weight_bits must be one of \[4, 8\], got 6"):
        QuantAwareConfig.from_dict({"weight_bits": 6}, source="run.yaml")
    with pytest.raises(ValueError, match="unknown keys.*'activation_bit'.*allowed keys"):
        QuantAwareConfig.from_dict({"activation_bit": 8})
    with pytest.raises(ValueError, match="weight_quantize_type.*channel_wise_abs_max"):
        QuantAwareConfig(weight_quantize_type="per_channel")
    with pytest.raises(ValueError, match="quantize_op_types.*conv2d"):
        QuantAwareConfig(quantize_op_types=["conv3d"])
    with pytest.raises(TypeError, match="use_pact"):
        QuantAwareConfig(use_pact="yes")
    with pytest.raises(ValueError, match="PACTConfig.init"):
        PACTConfig(init="max")
    with pytest.raises(ValueError, match="KureConfig.target"):
        KureConfig(target=0.5)
    assert QuantAwareConfig.from_dict({"quantize_op_types": ["mul"]}).dygraph_layer_types() == ["Linear"]


def test_kure_gives_the_exact_sgd_update_and_keeps_l2_elsewhere():
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 5), paddle.nn.Linear(5, 3))
    chosen = apply_kure(model, KureConfig(coeff=0.8, target=1.8, l2_coeff=0.01, params=["0.weight", "1.weight"]))
    assert chosen == ["0.weight", "1.weight"]
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters(), weight_decay=0.05)
    model(paddle.randn([4, 6])).square().mean().backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        w = before[name]
        if name in chosen:  # coeff split over the 2 tensors, plus the kept L2
            expected = w - 0.1 * (grads[name] + 0.4 * _kurtosis_decay_grad(w, 1.8) + 0.01 * w)
        else:  # the optimizer's weight_decay
            expected = w - 0.1 * (grads[name] + 0.05 * w)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_kure_selection_by_predicate_and_bad_names():
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 5), paddle.nn.Linear(5, 3))
    assert apply_kure(model, KureConfig(params=lambda name, p: name.startswith("1."))) == ["1.weight", "1.bias"]
    assert apply_kure(model, KureConfig()) == ["0.weight", "1.weight"]  # default: 2-D and up
    with pytest.raises(ValueError, match=r"no parameters named \['2.weight'\]"):
        apply_kure(model, KureConfig(params=["2.weight"]))


@pytest.mark.parametrize("bits,onnx_format", [(8, False), (4, False), (8, True)])
def test_qat_with_kure_and_pact_exports_what_was_trained(fmnist, tmp_path, bits, onnx_format):
    train_x, train_y, test_x = fmnist
    config = QuantAwareConfig(weight_bits=bits, activation_bits=bits, use_pact=True, onnx_format=onnx_format)
    model = prepare_qat(SmallCNN(), config, kure=KureConfig(coeff=0.5, params=["conv2.weight", "fc.weight"]),
                        pact=PACTConfig(init="percentile", percentile=99.0, learning_rate=10.0),
                        calib_batch=paddle.to_tensor(train_x[:128]))
    regularized = [p for p in model.parameters() if isinstance(getattr(p, "regularizer", None), KurtosisDecay)]
    assert len(regularized) == 2 and regularized[0].regularizer.coeff == 0.25
    pacts = [layer for layer in model.sublayers() if type(layer).__name__ == "QuantInputPACT"]
    assert len(pacts) == 3
    _train(model, train_x, train_y)
    reference = _eval(model, test_x)
    # PACT must be clipping something, or keeping it in the export would not show.
    first_alpha = float(pacts[0].alpha.numpy()[0])
    assert (np.abs(test_x) > first_alpha).any()
    model.train()

    path = str(tmp_path / "qat")
    export_quantized(model, path, SPEC, config)
    assert paddle.in_dynamic_mode() and model.training

    exported = InferenceModel(path).predict(test_x, batch_size=100)
    scale = np.abs(reference).max()
    # Float differences between the dygraph and inference kernels can flip a
    # rounding: a few outputs move by about one quantization step.
    assert (exported.argmax(1) == reference.argmax(1)).mean() >= 0.99
    assert (np.abs(exported - reference) <= 1e-5 * scale).mean() >= 0.95
    if onnx_format:
        # Paddle's quantize_linear also clips at -2^(b-1) where training clips at
        # -(2^(b-1)-1): inputs that saturate negatively move by one step.
        assert np.abs(exported - reference).max() < 0.01 * scale
        assert set(_op_attrs(path, "quantize_linear", "bit_length")) == {bits}
    else:
        assert np.abs(exported - reference).max() < 0.02 * scale
        assert set(_op_attrs(path, "fake_quantize_dequantize_moving_average_abs_max", "bit_length")) == {bits}


def test_ptq_at_8_and_4_bits(fmnist, tmp_path):
    train_x, train_y, test_x = fmnist
    model = SmallCNN()
    _train(model, train_x, train_y)
    fp32 = _eval(model, test_x)
    calib = [train_x[i:i + 64] for i in range(0, 256, 64)]
    errors = {}
    for bits in (8, 4):
        path = str(tmp_path / f"ptq_w{bits}a{bits}")
        config = QuantAwareConfig(weight_bits=bits, activation_bits=bits)
        post_training_quantize(model, calib, config, path, SPEC, batch_nums=4)
        assert paddle.in_dynamic_mode()
        assert set(_op_attrs(path, "quantize_linear", "bit_length")) == {bits}
        out = InferenceModel(path).predict(test_x)
        errors[bits] = np.abs(out - fp32).max()
        # measured: 0.99 at W8A8, 0.83 at W4A4 (chance is 0.1)
        assert (out.argmax(1) == fp32.argmax(1)).mean() >= (0.95 if bits == 8 else 0.7)
    assert errors[8] < 0.1 * np.abs(fp32).max() < errors[4]


def test_pact_layers_follow_use_pact_and_the_calibration_batch():
    from paddle_kure.nn import PACT
    x = paddle.to_tensor(np.random.default_rng(3).normal(size=(4, 1, 28, 28)).astype("float32"))
    model = prepare_qat(SmallCNN(), QuantAwareConfig(use_pact=True), pact=PACTConfig(init="abs_max"),
                        calib_batch=(x,))
    pacts = {name: layer for name, layer in model.named_sublayers() if isinstance(layer, PACT)}
    assert sorted(pacts) == [f"{name}._layer._act_preprocess" for name in ("conv1", "conv2", "fc")]
    # conv1's PACT sees the batch itself, so the calibration set its alpha to the batch's abs-max
    assert float(pacts["conv1._layer._act_preprocess"].alpha.numpy()[0]) == float(np.abs(x.numpy()).max())
    assert not any(layer._needs_data_init for layer in pacts.values())
    # no pact options: PACTConfig()'s defaults, alphas set by the first batch
    default = [layer for layer in prepare_qat(SmallCNN(), QuantAwareConfig(use_pact=True)).sublayers()
               if isinstance(layer, PACT)]
    assert len(default) == 3
    assert all(layer._needs_data_init and "init='percentile'" in layer.extra_repr() for layer in default)
    assert not any(isinstance(layer, PACT) for layer in prepare_qat(SmallCNN(), QuantAwareConfig()).sublayers())


def test_prepare_qat_quantizes_the_chosen_layer_types_with_the_chosen_weight_quantizer():
    def kinds(config):
        """Sorted class names of the quantized layers and of their weight quantizers."""
        layers = prepare_qat(SmallCNN(), config).named_sublayers()
        names = [(name, type(layer).__name__) for name, layer in layers]
        return (sorted(kind for _, kind in names if kind.startswith("Quantized")),
                sorted(kind for name, kind in names if name.endswith("_fake_quant_weight")))
    assert kinds(QuantAwareConfig()) == (["QuantizedConv2D", "QuantizedConv2D", "QuantizedLinear"],
                                         ["FakeQuantChannelWiseAbsMax"] * 3)
    assert kinds(QuantAwareConfig(quantize_op_types=["mul"], weight_quantize_type="abs_max")) == (
        ["QuantizedLinear"], ["FakeQuantAbsMax"])


def test_bad_calls_are_refused():
    with pytest.raises(TypeError, match="^model must be a Layer, got str"):
        prepare_qat("SmallCNN", QuantAwareConfig())
    with pytest.raises(TypeError, match="^config must be a QuantAwareConfig, got dict"):
        prepare_qat(SmallCNN(), {"weight_bits": 4})
    with pytest.raises(TypeError, match="^pact must be a PACTConfig, got dict"):
        prepare_qat(SmallCNN(), QuantAwareConfig(use_pact=True), pact={"init": "abs_max"})
    with pytest.raises(ValueError, match="activation_quantize_type 'abs_max' is static-graph only"):
        prepare_qat(SmallCNN(), QuantAwareConfig(activation_quantize_type="abs_max"))
    with pytest.raises(ValueError, match="use_pact is false"):
        prepare_qat(SmallCNN(), QuantAwareConfig(), pact=PACTConfig())
    with pytest.raises(ValueError, match="use_pact applies to QAT only"):
        post_training_quantize(SmallCNN(), [], QuantAwareConfig(use_pact=True), "unused", SPEC)
    with pytest.raises(ValueError, match="weight_bits == activation_bits"):
        post_training_quantize(SmallCNN(), [], QuantAwareConfig(weight_bits=4), "unused", SPEC)
    with pytest.raises(ValueError, match="weight_bits == activation_bits"):
        post_training_quantize(SmallCNN(), [], QuantAwareConfig(weight_bits=4, onnx_format=False), "unused", SPEC)
    with pytest.raises(ValueError, match="algo must be one of"):
        post_training_quantize(SmallCNN(), [], QuantAwareConfig(), "unused", SPEC, algo="minmax")
    with pytest.raises(FileNotFoundError, match="no exported model"):
        InferenceModel("/nonexistent/model")
