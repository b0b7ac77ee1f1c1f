"""Every quantization path honours the configured bit widths.

For static ``quant_aware_programs``/``export_static``, dygraph
``prepare_qat``/``export_quantized`` and ``post_training_quantize``, in both
export formats and with and without PACT, at W8 and W4:
(a) the fake-quantized weight equals an independent numpy fake quantization,
(b) changing the bits changes the output,
(c) the exported model, run by ``paddle.inference`` in a fresh process, agrees
    with the trained program.
"""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from graph_modes import static_mode

from paddle_kure.quant import (PACTConfig, QuantAwareConfig, export_quantized, post_training_quantize,
                               prepare_qat)
from paddle_kure.quant.static import allow_input_gradients, export_static, quant_aware_programs

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(128, 1, 8, 8)).astype("float32")
LABELS = RNG.integers(0, 10, size=(128, 1)).astype("int64")
SPEC = [paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")]
FORMATS = [True, False]
BITS = [8, 4]


def fake_quantize(w, bits, axis):
    """Per-channel abs-max fake quantization along ``axis`` (the output channels)."""
    levels = 2 ** (bits - 1) - 1
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=reduce, keepdims=True).astype("float64")
    q = np.clip(np.round(w / scale * levels), -levels, levels)
    return (q * scale / levels).astype("float32")


def assert_fake_quantized(dequantized, weight, bits, axis, what):
    expected = fake_quantize(weight, bits, axis)
    step = np.abs(weight).max() / (2 ** (bits - 1) - 1)
    # a value on a rounding tie may go either way in float32: allow one step on a few
    off = np.abs(dequantized - expected) > 1e-5 * step
    assert off.mean() <= 0.01, f"{what}: {off.sum()} of {off.size} weights differ from numpy fake quantization"
    assert np.abs(dequantized - expected).max() <= 1.001 * step, what


# ---- static graph ----------------------------------------------------------------------------

def _static_net():
    x = paddle.static.data("x", [None, 1, 8, 8], "float32")
    label = paddle.static.data("label", [None, 1], "int64")
    conv = paddle.nn.Conv2D(1, 4, 3)
    logits = paddle.static.nn.fc(paddle.flatten(paddle.nn.functional.relu(conv(x)), 1), 10)
    loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
    return logits, loss


def _weight_source(block, name):
    """The parameter that a quantized op input was computed from (following X inputs)."""
    producer = {out: op for op in block.ops for out in op.output_arg_names}
    while not block.var(name).persistable:
        name = producer[name].input("X")[0]
    return name


def _quantized_weights(block):
    """{dequantized weight var: (parameter, output-channel axis)} of the conv and fc ops."""
    found = {}
    for op in block.ops:
        if op.type in ("conv2d", "depthwise_conv2d"):
            found[op.input("Filter")[0]] = 0
        elif op.type in ("mul", "matmul_v2"):
            found[op.input("Y")[0]] = 1
    return {name: (_weight_source(block, name), axis) for name, axis in found.items() if not block.var(name).persistable}


def _quant_op_bits(block):
    """(weight bit widths, activation bit widths) of the program's quantize ops."""
    weight_bits, activation_bits = set(), set()
    for op in block.ops:
        if op.has_attr("bit_length") and "dequantize" not in op.type:
            source = op.input("X")[0]
            (weight_bits if block.var(source).persistable else activation_bits).add(op.attr("bit_length"))
    return weight_bits, activation_bits


def _static_qat(tmp_path, weight_bits, activation_bits, onnx_format, use_pact, steps=6):
    config = QuantAwareConfig(weight_bits=weight_bits, activation_bits=activation_bits, onnx_format=onnx_format,
                              use_pact=use_pact)
    with static_mode("legacy"):
        paddle.seed(0)
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            logits, loss = _static_net()
            test_program = main.clone(for_test=True)
            if use_pact:
                allow_input_gradients(main)
            paddle.optimizer.Adam(1e-2).minimize(loss)
        place = paddle.CPUPlace()
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(place)
            exe.run(startup)
            train, test = quant_aware_programs(
                main, test_program, place, config, pact=PACTConfig(init=2.0) if use_pact else None,
                optimizer_func=lambda: paddle.optimizer.Momentum(0.01), executor=exe, scope=scope)
            for _ in range(steps):
                exe.run(train, feed={"x": IMAGES, "label": LABELS}, fetch_list=[loss.name])
            block = test.global_block()
            weights = _quantized_weights(block)
            fetched = exe.run(test, feed={"x": IMAGES, "label": LABELS},
                              fetch_list=[logits.name, *weights, *(p for p, _ in weights.values())])
            bits_seen = _quant_op_bits(block)
            path = None
            if tmp_path is not None:
                path = str(tmp_path / f"static_w{weight_bits}a{activation_bits}_{onnx_format}_{use_pact}")
                export_static(test, path, ["x"], [block.var(logits.name)], place, config, executor=exe, scope=scope)
    n = len(weights)
    checks = [(fetched[1 + i], fetched[1 + n + i], axis) for i, (_, axis) in enumerate(weights.values())]
    return fetched[0], checks, bits_seen, path


# ---- dygraph -----------------------------------------------------------------------------------

class _Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(1, 4, 3)
        self.fc = paddle.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(paddle.flatten(paddle.nn.functional.relu(self.conv(x)), 1))


def _dygraph_qat(tmp_path, weight_bits, activation_bits, onnx_format, use_pact, steps=6):
    config = QuantAwareConfig(weight_bits=weight_bits, activation_bits=activation_bits, onnx_format=onnx_format,
                              use_pact=use_pact)
    paddle.seed(0)
    model = prepare_qat(_Net(), config, pact=PACTConfig(init="percentile", percentile=99.0) if use_pact else None,
                        calib_batch=paddle.to_tensor(IMAGES) if use_pact else None)
    opt = paddle.optimizer.Adam(1e-2, parameters=model.parameters())
    x, y = paddle.to_tensor(IMAGES), paddle.to_tensor(LABELS)
    for _ in range(steps):
        paddle.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    with paddle.no_grad():
        reference = model(x).numpy()
        layers = [layer for layer in model.sublayers() if hasattr(layer, "_fake_quant_weight")]
        checks = [(layer._fake_quant_weight(layer.weight).numpy(), layer.weight.numpy(),
                   0 if type(layer).__name__ == "QuantizedConv2D" else 1) for layer in layers]
    bits_seen = ({layer._fake_quant_weight._quant_bits for layer in layers},
                 {layer._fake_quant_input._quant_bits for layer in layers})
    path = None
    if tmp_path is not None:
        path = str(tmp_path / f"dygraph_w{weight_bits}a{activation_bits}_{onnx_format}_{use_pact}")
        export_quantized(model, path, SPEC, config)
    return reference, checks, bits_seen, path


QAT_PATHS = {"static": _static_qat, "dygraph": _dygraph_qat}


def _infer_in_fresh_process(paths, tmp_path):
    """Runs every exported model with paddle.inference in a new Python process."""
    np.save(tmp_path / "images.npy", IMAGES)
    script = (
        "import json, sys, numpy as np\n"
        "from paddle_kure.quant import InferenceModel\n"
        "paths = json.loads(sys.argv[1]); images = np.load(sys.argv[2])\n"
        "for i, p in enumerate(paths): np.save(f'{sys.argv[3]}/out{i}.npy', InferenceModel(p, ir_optim=False).predict(images))\n"
    )
    subprocess.run([sys.executable, "-c", script, json.dumps(paths), str(tmp_path / "images.npy"), str(tmp_path)],
                   check=True, capture_output=True, env=dict(os.environ))
    return [np.load(tmp_path / f"out{i}.npy") for i in range(len(paths))]


def _assert_agree(exported, trained, what):
    spread = trained.max() - trained.min()
    agreement = (exported.argmax(1) == trained.argmax(1)).mean()
    assert agreement >= 0.99, f"{what}: argmax agreement {agreement:.3f}"
    diff = np.abs(exported - trained)
    assert diff.max() <= 1e-3 * spread, f"{what}: max diff {diff.max()} / {spread}, rows {np.unique(np.nonzero(diff > 1e-3 * spread)[0])}"


@pytest.mark.parametrize("path_name", sorted(QAT_PATHS))
def test_qat_paths_honour_bits_and_export_what_they_trained(tmp_path, path_name):
    build = QAT_PATHS[path_name]
    results = {}
    for onnx_format in FORMATS:
        for use_pact in (False, True):
            for bits in BITS:
                results[onnx_format, use_pact, bits] = build(tmp_path, bits, bits, onnx_format, use_pact)
    keys = sorted(results)
    exported = dict(zip(keys, _infer_in_fresh_process([results[k][3] for k in keys], tmp_path)))
    for (onnx_format, use_pact, bits), (reference, checks, bits_seen, _) in results.items():
        what = f"{path_name} W{bits}A{bits} onnx_format={onnx_format} use_pact={use_pact}"
        assert bits_seen == ({bits}, {bits}), what
        assert len(checks) == 2, what
        for dequantized, weight, axis in checks:  # (a)
            assert_fake_quantized(dequantized, weight, bits, axis, what)
        _assert_agree(exported[onnx_format, use_pact, bits], reference, what)  # (c)
    for onnx_format in FORMATS:  # (b)
        for use_pact in (False, True):
            w8, w4 = results[onnx_format, use_pact, 8][0], results[onnx_format, use_pact, 4][0]
            assert np.abs(w8 - w4).max() > 0.01 * np.abs(w8).max(), (path_name, onnx_format, use_pact)


@pytest.mark.parametrize("path_name", sorted(QAT_PATHS))
@pytest.mark.parametrize("weight_bits,activation_bits", [(4, 8), (8, 4)])
def test_qat_paths_give_weights_and_activations_their_own_bits(path_name, weight_bits, activation_bits):
    _, checks, bits_seen, _ = QAT_PATHS[path_name](None, weight_bits, activation_bits, True, False, steps=1)
    assert bits_seen == ({weight_bits}, {activation_bits})
    for dequantized, weight, axis in checks:
        assert_fake_quantized(dequantized, weight, weight_bits, axis, path_name)


# ---- post-training quantization ----------------------------------------------------------------

def _exported_weights(path):
    """The dequantized conv/fc weights that the saved model computes, with their axes.

    The ONNX format stores integer weights with a dequantize_linear op before the
    conv/fc; the older format stores them integer and rescales the conv/fc output
    (fake_channel_wise_dequantize_max_abs with the channel scales)."""
    scope = paddle.static.Scope()
    with static_mode("legacy"), paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, feeds, _ = paddle.static.load_inference_model(path, exe)
        block = program.global_block()
        weights = _quantized_weights(block)
        found = [(value, axis) for value, (_, axis) in
                 zip(exe.run(program, feed={feeds[0]: IMAGES}, fetch_list=list(weights)), weights.values())]
        users = {name: op for op in block.ops for name in op.input_arg_names}
        for op in block.ops:
            weight = {"conv2d": "Filter", "matmul_v2": "Y", "mul": "Y"}.get(op.type)
            if weight is None or not block.var(op.input(weight)[0]).persistable:
                continue
            rescale = users[op.output_arg_names[0]]
            assert rescale.type == "fake_channel_wise_dequantize_max_abs", rescale.type
            levels = 2 ** (rescale.attr("quant_bits")[0] - 1) - 1
            stored = np.array(scope.find_var(op.input(weight)[0]).get_tensor())
            scales = np.array(scope.find_var(rescale.input("Scales")[0]).get_tensor())
            axis = rescale.attr("quant_axis")
            shape = [-1 if i == axis else 1 for i in range(stored.ndim)]
            assert np.array_equal(stored, np.round(stored)), "weights are not stored as integers"
            found.append((stored * scales.reshape(shape) / levels, axis))
    return found


@pytest.mark.parametrize("onnx_format", FORMATS)
def test_ptq_honours_bits(tmp_path, onnx_format):
    paddle.seed(0)
    model = _Net()
    fp32 = {name: p.numpy() for name, p in model.named_parameters()}
    originals = [fp32["conv.weight"], fp32["fc.weight"]]
    outputs = {}
    for bits in BITS:
        path = str(tmp_path / f"ptq_w{bits}_{onnx_format}")
        config = QuantAwareConfig(weight_bits=bits, activation_bits=bits, onnx_format=onnx_format)
        post_training_quantize(model, [IMAGES[:64], IMAGES[64:]], config, path, SPEC, batch_nums=2)
        weights = _exported_weights(path)
        assert len(weights) == 2
        for (dequantized, axis), original in zip(weights, originals):
            assert_fake_quantized(dequantized, original, bits, axis, f"PTQ W{bits} onnx_format={onnx_format}")
        outputs[bits] = path
    w8, w4 = _infer_in_fresh_process([outputs[8], outputs[4]], tmp_path)
    assert np.abs(w8 - w4).max() > 0.01 * np.abs(w8).max()


@pytest.mark.parametrize("onnx_format", FORMATS)
def test_static_qat_with_per_tensor_weights_trains_and_exports(tmp_path, onnx_format):
    """Per-tensor weight scales (weight_quantize_type 'abs_max') run in the test
    program and export, in both formats."""
    config = QuantAwareConfig(weight_bits=4, activation_bits=4, weight_quantize_type="abs_max",
                              onnx_format=onnx_format)
    with static_mode("legacy"):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            logits, loss = _static_net()
            test_program = main.clone(for_test=True)
            paddle.optimizer.Adam(1e-2).minimize(loss)
        place, scope = paddle.CPUPlace(), paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(place)
            exe.run(startup)
            train, test = quant_aware_programs(main, test_program, place, config, executor=exe, scope=scope)
            for _ in range(3):
                exe.run(train, feed={"x": IMAGES, "label": LABELS}, fetch_list=[loss.name])
            trained, = exe.run(test, feed={"x": IMAGES, "label": LABELS}, fetch_list=[logits.name])
            path = str(tmp_path / "per_tensor")
            export_static(test, path, ["x"], [test.global_block().var(logits.name)], place, config,
                          executor=exe, scope=scope)
    exported, = _infer_in_fresh_process([path], tmp_path)
    assert (exported.argmax(1) == trained.argmax(1)).mean() >= 0.9
