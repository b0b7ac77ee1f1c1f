"""One test per shim in paddle_kure/quant/compat.py (and the checks in
paddle_kure/quant/static.py), each showing the problem with raw PaddleSlim 2.6 /
Paddle 3.3. When one of these tests fails, the problem is gone upstream: delete
the shim (and the test)."""
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from graph_modes import static_mode
from tiny_cnn import TinyCNN

from paddle_kure.nn import PACT, pact
from paddle_kure.quant import InferenceModel, PACTConfig, QuantAwareConfig, post_training_quantize
from paddle_kure.quant import compat

compat.import_paddleslim()
from paddleslim.dygraph.quant import QAT  # noqa: E402
from paddleslim.dygraph.quant.qat import PACT as SlimPACT  # noqa: E402
from paddleslim.quant import quant_aware  # noqa: E402

SPEC = [paddle.static.InputSpec([None, 1, 8, 8], "float32")]


class SmallAlphaPACT(PACT):
    """Clips hard, so dropping it changes the outputs."""

    def __init__(self):
        super().__init__(init=0.5, signed=True)


def _quantized(bits=8, onnx_format=False, act_preprocess=None):
    """A QAT TinyCNN whose fake-quant scales have seen a few batches."""
    model = TinyCNN()
    qat = QAT(config={"weight_bits": bits, "activation_bits": bits, "onnx_format": onnx_format},
              act_preprocess=act_preprocess)
    qat.quantize(model)
    x = paddle.randn([32, 1, 8, 8]) * 2
    model.train()
    for _ in range(3):
        model(x)
    model.eval()
    with paddle.no_grad():
        reference = model(x).numpy()
    return qat, model, x.numpy(), reference


def _exported_program(path):
    with static_mode("legacy"):
        program, _, fetch_vars = paddle.static.load_inference_model(path, paddle.static.Executor(paddle.CPUPlace()))
    producers = {out: op.type for op in program.global_block().ops for out in op.output_arg_names}
    return program, producers[fetch_vars[0].name]


def test_plain_import_paddleslim_works_and_needs_pkg_resources():
    """Users import PaddleSlim themselves: the install pins setuptools < 81 for the
    pkg_resources it imports. When the second import works, drop the pin."""
    plain = subprocess.run([sys.executable, "-c", "import paddleslim"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    blocked = "import sys; sys.modules['pkg_resources'] = None\nimport paddleslim"
    without = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "pkg_resources" in without.stderr


def test_slim_save_quantized_model_leaves_static_mode(tmp_path):
    qat, model, _, _ = _quantized(act_preprocess=SmallAlphaPACT)
    qat.save_quantized_model(model, str(tmp_path / "slim"), SPEC)
    left_static = not paddle.in_dynamic_mode()
    paddle.disable_static()
    assert left_static
    # the shim restores the mode whatever runs inside it
    with compat.keep_paddle_mode():
        paddle.enable_static()
    assert paddle.in_dynamic_mode()


def test_slim_save_quantized_model_drops_pact(tmp_path):
    qat, model, x, reference = _quantized(act_preprocess=SmallAlphaPACT)
    qat.save_quantized_model(model, str(tmp_path / "slim"), SPEC)
    paddle.disable_static()
    slim = InferenceModel(str(tmp_path / "slim")).predict(x)
    compat.save_quantized_model(model, str(tmp_path / "kept"), SPEC, activation_bits=8, onnx_format=False)
    kept = InferenceModel(str(tmp_path / "kept")).predict(x)
    scale = np.abs(reference).max()
    assert np.abs(slim - reference).max() > 0.1 * scale
    assert np.abs(kept - reference).max() < 0.02 * scale


def test_slim_builtin_pact_is_an_identity_on_normalized_data():
    layer = SlimPACT()
    assert float(layer.alpha.numpy()[0]) == 100.0
    assert layer.alpha.optimize_attr["learning_rate"] == 1000.0
    x = paddle.randn([1000]) * 3
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    # the replacement starts where the configuration says
    ours = compat.pact_layer_class(PACTConfig(init=2.0, learning_rate=5.0))()
    assert ours.signed and float(ours.alpha.numpy()[0]) == 2.0 and ours.alpha.optimize_attr["learning_rate"] == 5.0


def test_onnx_export_quantizes_every_layer_output(tmp_path):
    _, model, x, reference = _quantized(bits=4, onnx_format=True)
    raw = paddle.quantization.ImperativeQuantAware(activation_bits=4, onnx_format=True)
    raw.save_quantized_model(model, str(tmp_path / "raw"), SPEC)
    compat.save_quantized_model(model, str(tmp_path / "shim"), SPEC, activation_bits=4, onnx_format=True)
    assert _exported_program(str(tmp_path / "raw"))[1] == "dequantize_linear"  # the logits are quantized
    assert _exported_program(str(tmp_path / "shim"))[1] != "dequantize_linear"
    raw_error = np.abs(InferenceModel(str(tmp_path / "raw")).predict(x) - reference).max()
    shim_error = np.abs(InferenceModel(str(tmp_path / "shim")).predict(x) - reference).max()
    # What remains with the shim is the negative clip (-8 in inference, -7 in training).
    assert raw_error > 2 * shim_error


def test_ptq_onnx_ops_lack_the_integer_range(tmp_path, monkeypatch):
    model = TinyCNN()
    model.eval()
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype("float32")
    fp32 = model(paddle.to_tensor(x)).numpy()
    config = QuantAwareConfig(weight_bits=4, activation_bits=4)
    path = str(tmp_path / "ptq")
    monkeypatch.setattr(compat, "set_quantization_range", lambda path: None)  # raw quant_post_static
    post_training_quantize(model, [x], config, path, SPEC, batch_nums=1)
    program, _ = _exported_program(path)
    assert not any(op.has_attr("qmax") for op in program.global_block().ops if op.type == "dequantize_linear")
    raw_error = np.abs(InferenceModel(path).predict(x) - fp32).max()
    monkeypatch.undo()
    compat.set_quantization_range(path)
    shim_error = np.abs(InferenceModel(path).predict(x) - fp32).max()
    assert raw_error > 3 * shim_error


def _legacy_programs(input_gradient=True):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 1, 8, 8], "float32")  # stop_gradient=True
        logits = paddle.static.nn.fc(paddle.flatten(paddle.nn.Conv2D(1, 4, 3)(x), 1), 10)
        loss = paddle.mean(paddle.square(logits))
        test = main.clone(for_test=True)
        if input_gradient:
            assert compat.allow_input_gradients(main) == ["x"]
        paddle.optimizer.SGD(0.1).minimize(loss)
    return main, startup, test


def _pact_func(x):
    attr = paddle.ParamAttr(name=f"{x.name}.alpha", initializer=paddle.nn.initializer.Constant(1.0))
    return pact(x, paddle.static.create_parameter([1], "float32", attr=attr), signed=True)


def _quant_aware(program, for_test):
    place = paddle.CPUPlace()
    return quant_aware(program, place, config={"onnx_format": True}, for_test=for_test, act_preprocess_func=_pact_func,
                       optimizer_func=lambda: paddle.optimizer.SGD(0.01), executor=paddle.static.Executor(place),
                       return_program=True)


def test_quant_aware_test_program_with_preprocess_needs_test_subgraphs():
    with static_mode("legacy"):
        main, startup, test = _legacy_programs()
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        with pytest.raises(Exception, match="@GRAD"):
            _quant_aware(test.clone(for_test=True), for_test=True)
        with compat.test_subgraphs_for_test():
            quantized = _quant_aware(test, for_test=True)
    assert any(op.type == "quantize_linear" for op in quantized.global_block().ops)


def _train_once(program):
    feed = {"x": np.random.default_rng(0).normal(size=(8, 1, 8, 8)).astype("float32")}
    paddle.static.Executor(paddle.CPUPlace()).run(program, feed=feed)


def test_quant_aware_preprocess_on_a_data_input_needs_its_gradient():
    with static_mode("legacy"):
        main, startup, _ = _legacy_programs(input_gradient=False)
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        with pytest.raises(ValueError, match=r"\['x'\].*allow_input_gradients"):
            compat.check_input_gradients(main)
        train = _quant_aware(main, for_test=False)
        with pytest.raises(Exception, match="holds no memory"):
            _train_once(train)
        main, startup, _ = _legacy_programs(input_gradient=True)
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        compat.check_input_gradients(main)
        _train_once(_quant_aware(main, for_test=False))


def test_building_the_test_program_resets_shared_alphas():
    with static_mode("legacy"):
        main, startup, test = _legacy_programs()
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        train = _quant_aware(main, for_test=False)
        alpha_name = next(v.name for v in train.list_vars() if v.name.endswith(".alpha"))
        alpha = paddle.static.global_scope().find_var(alpha_name).get_tensor()
        alpha.set(np.array([3.0], "float32"), paddle.CPUPlace())  # as if trained
        with compat.test_subgraphs_for_test():
            _quant_aware(test, for_test=True)
        assert float(np.array(alpha)[0]) == 1.0  # back to its initial value


def test_quant_aware_rejects_pir_programs():
    paddle.enable_static()
    try:
        with pytest.raises(AttributeError, match="desc"):
            quant_aware(paddle.static.Program(), paddle.CPUPlace(), for_test=True)
    finally:
        paddle.disable_static()


def test_quant_aware_onnx_ops_lack_the_integer_range(monkeypatch):
    from test_lowbit import _static_qat

    monkeypatch.setattr(compat, "set_program_quantization_range", lambda program: None)  # raw quant_aware
    w8, w4 = (_static_qat(None, bits, bits, True, False, steps=2)[0] for bits in (8, 4))
    np.testing.assert_array_equal(w8, w4)  # W4 computes what W8 computes


def test_quant_aware_test_program_quantizes_weights_with_stale_scales(monkeypatch):
    from test_lowbit import _static_qat, fake_quantize

    monkeypatch.setattr(compat, "quantize_weights_with_current_scale", lambda program: None)
    for onnx_format in (True, False):
        _, checks, _, _ = _static_qat(None, 8, 8, onnx_format, False, steps=1)
        for dequantized, weight, axis in checks:
            assert np.abs(dequantized - fake_quantize(weight, 8, axis)).max() > 1e-3 * np.abs(weight).max()


def test_convert_loses_the_scales_of_preprocessed_inputs(tmp_path, monkeypatch):
    import contextlib

    from test_lowbit import _static_qat

    monkeypatch.setattr(compat, "freeze_pass_knows_preprocessed_inputs", contextlib.nullcontext)
    with pytest.raises(KeyError):  # the name of the first preprocessed input
        _static_qat(tmp_path, 8, 8, False, True, steps=1)


def test_dygraph_onnx_export_rounds_ties_unlike_training(tmp_path, monkeypatch):
    from test_lowbit import _dygraph_qat

    monkeypatch.setattr(compat, "set_quantization_range", lambda path: None)  # raw export
    trained, _, _, path = _dygraph_qat(tmp_path, 8, 8, True, False)
    program, _ = _exported_program(path)
    assert not any(op.has_attr("round_type") for op in program.global_block().ops if op.type == "quantize_linear")
    from test_lowbit import IMAGES

    exported = InferenceModel(path).predict(IMAGES)
    assert np.abs(exported - trained).max() > 1e-3 * (trained.max() - trained.min())
