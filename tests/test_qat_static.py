"""Static-graph passes: KURE on PIR and legacy Programs, PaddleSlim quant_aware
with PACT, convert, save_inference_model and paddle.inference."""
import numpy as np
import paddle
import pytest
from graph_modes import static_mode

from paddle_kure.quant import InferenceModel, PACTConfig, QuantAwareConfig
from paddle_kure.quant.static import (add_kurtosis_regularization, allow_input_gradients, export_static,
                                      kurtosis_loss, quant_aware_programs)
from paddle_kure.regularizer import KurtosisDecay


def _kurtosis(w):
    d = w.astype("float64").ravel() - w.mean()
    return (d ** 4).mean() / (d ** 2).mean() ** 2


def _kure_grad(w, target):
    d = w.astype("float64").ravel() - w.mean()
    m2, m3 = (d ** 2).mean(), (d ** 3).mean()
    k = _kurtosis(w)
    return (2 * (k - target) * 4.0 / (d.size * m2 ** 2) * (d ** 3 - m3 - k * m2 * d)).reshape(w.shape)


def _two_layer_net(x):
    hidden = paddle.nn.functional.relu(paddle.static.nn.fc(x, 6))
    return paddle.static.nn.fc(hidden, 3)


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_regularizer_pass_gives_the_exact_sgd_update(ir):
    features = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [4, 5], "float32")
            y = paddle.static.nn.fc(x, 3)
            loss = paddle.mean(paddle.square(y))
            weight, bias = sorted(main.global_block().all_parameters(), key=lambda p: -len(p.shape))
            names = add_kurtosis_regularization(main, coeff=0.6, l2_coeff=0.01)
            paddle.optimizer.SGD(learning_rate=0.1, weight_decay=0.05).minimize(loss)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        scope = paddle.static.global_scope()
        w0, b0 = (np.array(scope.find_var(p.name).get_tensor()).copy() for p in (weight, bias))
        exe.run(main, feed={"x": features})
        w1, b1 = (np.array(scope.find_var(p.name).get_tensor()) for p in (weight, bias))
    assert names == [weight.name]  # the default selection: 2-D and up
    # loss = mean((x w + b)^2): d/dw = 2/12 x^T (x w + b), d/db = 2/12 sum over rows
    out = features @ w0 + b0
    grad_w, grad_b = features.T @ out / 6.0, out.sum(0) / 6.0
    np.testing.assert_allclose(w1, w0 - 0.1 * (grad_w + 0.6 * _kure_grad(w0, 1.8) + 0.01 * w0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - 0.1 * (grad_b + 0.05 * b0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_kurtosis_loss_term_matches_numpy(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 5], "float32")
            _two_layer_net(x)
            weights = [p for p in main.global_block().all_parameters() if len(p.shape) == 2]
            term = kurtosis_loss(main, params=[w.name for w in weights], coeff=2.0, target=1.8)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        value, *ws = exe.run(main, feed={"x": np.ones((1, 5), "float32")}, fetch_list=[term, *weights])
    expected = 2.0 * np.mean([(_kurtosis(w) - 1.8) ** 2 for w in ws])
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_selection_errors_name_the_problem():
    with static_mode("legacy"):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            _two_layer_net(paddle.static.data("x", [None, 5], "float32"))
        with pytest.raises(ValueError, match=r"no parameters named \['w9'\]"):
            add_kurtosis_regularization(main, params=["w9"])
        with pytest.raises(ValueError, match="chose no parameter"):
            add_kurtosis_regularization(main, params=lambda name, p: False)
        assert isinstance(main.global_block().all_parameters()[0].regularizer, type(None))
        add_kurtosis_regularization(main, params=lambda name, p: name.endswith("w_0"))
        assert isinstance(main.global_block().all_parameters()[0].regularizer, KurtosisDecay)


@pytest.mark.parametrize("use_pact", [True, False])
def test_quant_aware_with_pact_train_convert_and_infer_agree(tmp_path, use_pact):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 1, 8, 8)).astype("float32")
    labels = rng.integers(0, 10, size=(64, 1)).astype("int64")
    config = QuantAwareConfig(weight_bits=8, activation_bits=8, use_pact=use_pact)
    with static_mode("legacy"):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 1, 8, 8], "float32")
            label = paddle.static.data("label", [None, 1], "int64")
            conv = paddle.nn.Conv2D(1, 4, 3)
            logits = paddle.static.nn.fc(paddle.flatten(paddle.nn.functional.relu(conv(x)), 1), 10)
            loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
            test_program = main.clone(for_test=True)
            add_kurtosis_regularization(main, coeff=0.5)
            if use_pact:
                assert allow_input_gradients(main) == ["x", "label"]
            paddle.optimizer.Adam(1e-2).minimize(loss)
        place = paddle.CPUPlace()
        exe = paddle.static.Executor(place)
        exe.run(startup)
        train, test = quant_aware_programs(
            main, test_program, place, config,
            pact=PACTConfig(init=1.0, learning_rate=10.0) if use_pact else None,
            optimizer_func=lambda: paddle.optimizer.Momentum(0.01),
        )
        scope = paddle.static.global_scope()
        alpha_names = sorted(v.name for v in test.list_vars() if v.name.endswith(".pact_alpha"))
        for _ in range(8):
            exe.run(train, feed={"x": images, "label": labels}, fetch_list=[loss.name])
        reference, = exe.run(test, feed={"x": images, "label": labels}, fetch_list=[logits.name])
        alphas = [float(np.array(scope.find_var(n).get_tensor())[0]) for n in alpha_names]
        path = str(tmp_path / "static_qat")
        export_static(test, path, ["x"], [test.global_block().var(logits.name)], place, config)
    if use_pact:
        # one alpha per quantized input (conv input, fc input), trained away from 1.0
        assert len(alphas) == 2 and all(abs(a - 1.0) > 1e-3 for a in alphas)
        assert (np.abs(images) > min(alphas)).any()  # PACT clips something
    else:
        assert alphas == []
    exported = InferenceModel(path).predict(images)
    np.testing.assert_array_equal(exported.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(exported, reference, atol=1e-4 * np.abs(reference).max())


def test_quant_aware_programs_refuses_bad_programs():
    with static_mode("pir"):
        main = paddle.static.Program()
        with pytest.raises(TypeError, match="OldIrGuard"):
            quant_aware_programs(main, main, paddle.CPUPlace(), QuantAwareConfig())
    with static_mode("legacy"):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            _two_layer_net(paddle.static.data("x", [None, 5], "float32"))
        with pytest.raises(ValueError, match="optimizer_func"):
            quant_aware_programs(main, main, paddle.CPUPlace(), QuantAwareConfig(use_pact=True))
        with pytest.raises(ValueError, match=r"\['x'\].*allow_input_gradients"):
            quant_aware_programs(main, main, paddle.CPUPlace(), QuantAwareConfig(use_pact=True),
                                 optimizer_func=lambda: paddle.optimizer.SGD(0.1))


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_kure_after_minimize_is_refused(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            loss = paddle.mean(_two_layer_net(paddle.static.data("x", [None, 5], "float32")))
            paddle.optimizer.SGD(0.1).minimize(loss)
            with pytest.raises(ValueError, match="before the optimizer's minimize"):
                add_kurtosis_regularization(main)


def test_paddleslim_config_carries_every_setting_and_the_extra_options():
    # the keys are PaddleSlim's quant_aware config names; slim_options adds keys and overrides ours
    from paddle_kure.quant.static import _slim_config
    config = QuantAwareConfig(weight_bits=4, activation_bits=8, weight_quantize_type="abs_max",
                              activation_quantize_type="range_abs_max", quantize_op_types=["conv2d"],
                              onnx_format=False)
    expected = {"weight_bits": 4, "activation_bits": 8, "weight_quantize_type": "abs_max",
                "activation_quantize_type": "range_abs_max", "quantize_op_types": ["conv2d"], "onnx_format": False}
    assert _slim_config(config) == expected
    assert _slim_config(config, {"window_size": 500, "onnx_format": True}) == dict(
        expected, window_size=500, onnx_format=True)
