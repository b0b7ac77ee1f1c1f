"""Selective KURE (paddle_kure.selection) and KURE as a loss (paddle_kure.losses)."""
import gc
import weakref

import numpy as np
import paddle
import pytest
from graph_modes import static_mode
from kurtosis_reference import KURTOSES_NEAR_LOG_MAD_DEFAULT, array_with_kurtosis, kure_term, numerical_grad
from kurtosis_reference import kurtosis as ref_kurtosis

from paddle_kure import ActivationKurtosis, Kure, KurtosisDecay, KurtosisLoss, attach_kure, kurtosis, plan_kure
from paddle_kure.apps.run_config import ConfigError, KurtosisConfig, load_config
from paddle_kure.losses import kurtosis_penalty
from paddle_kure.param_filter import ParamFilter
from paddle_kure.selection import select_tensors


class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(1, 4, 3)
        self.fc1 = paddle.nn.Linear(16, 32)
        self.fc2 = paddle.nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(paddle.nn.functional.relu(self.fc1(self.conv(x).flatten(1))))


def tower(num=12, size=40, heavy=None):
    """``num`` Linear layers with uniform weights; layer ``heavy`` gets Laplace-cubed weights."""
    rng = np.random.default_rng(0)
    model = paddle.nn.Sequential(*[paddle.nn.Linear(size, size) for _ in range(num)])
    for i, layer in enumerate(model):
        w = rng.laplace(size=(size, size)) ** 3 if i == heavy else rng.uniform(-1, 1, (size, size))
        layer.weight.set_value(w.astype("float32"))
    return model


def test_default_include_regex_exclude_layer_types_and_min_size():
    net = Net()
    assert plan_kure(net).chosen == ["conv.weight", "fc1.weight", "fc2.weight"]  # 2+ dims
    assert plan_kure(net, include=[r"fc\d\..*"]).chosen == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert plan_kure(net, include=lambda name, p: p.shape[-1] == 32).chosen == ["fc1.weight", "fc1.bias"]
    assert plan_kure(net, exclude=[r"conv\..*", "fc2.weight"]).chosen == ["fc1.weight"]
    assert plan_kure(net, layer_types=["Linear"]).chosen == ["fc1.weight", "fc2.weight"]
    assert plan_kure(net, layer_types=[paddle.nn.Conv2D]).chosen == ["conv.weight"]
    assert plan_kure(net, layer_types=["Layer"]).chosen == plan_kure(net).chosen  # base classes count
    assert plan_kure(net, min_size=96).chosen == ["fc1.weight", "fc2.weight"]  # conv: 36, fc2: 96
    # a whole-name match: "fc1" alone matches no name
    with pytest.raises(ValueError, match=r"no parameters named \['fc1'\]"):
        plan_kure(net, include=["fc1"])
    with pytest.raises(ValueError, match=r"plan_kure: exclude: no parameters named \['fc3.*there are \['conv.weight'"):
        plan_kure(net, exclude=[r"fc3\..*"])  # a stale name would otherwise change nothing
    with pytest.raises(ValueError, match="not a regular expression"):
        plan_kure(net, exclude=["fc1["])
    with pytest.raises(TypeError, match="list of regular expressions"):
        plan_kure(net, exclude="fc1.weight")
    with pytest.raises(ValueError, match="min_size"):
        plan_kure(net, min_size=-1)
    with pytest.raises(ValueError, match="auto_exclude must be None or one of"):
        plan_kure(net, auto_exclude="iqr")
    with pytest.raises(TypeError, match="neither a paddle.nn.Layer class"):
        plan_kure(net, layer_types=[int])
    with pytest.raises(TypeError, match="Layer or a static Program"):
        plan_kure({"w": net.fc1.weight})


@pytest.mark.parametrize("rule", ["mean_std", "log_mad"])
def test_auto_exclude_leaves_out_the_heavy_tailed_tensor(rule):
    model = tower(heavy=7)
    plan = plan_kure(model, auto_exclude=rule)
    kurtoses = {row.name: row.kurtosis for row in plan.rows}
    assert kurtoses["7.weight"] > 100 and max(v for n, v in kurtoses.items() if n != "7.weight") < 2
    assert plan.chosen == [f"{i}.weight" for i in range(12) if i != 7]
    row = next(row for row in plan.rows if row.name == "7.weight")
    assert not row.chosen and row.reason.startswith(f"kurtosis outlier ({rule}")
    assert "7.weight" in str(plan) and f"kurtosis outlier ({rule}" in str(plan)
    # without the rule everything of 2+ dims is chosen
    assert len(plan_kure(model).chosen) == 12


def test_log_mad_default_threshold_decides_between_3_5_and_5_robust_std():
    rng = np.random.default_rng(3)
    model = paddle.nn.Sequential(*[paddle.nn.Linear(8, 8) for _ in KURTOSES_NEAR_LOG_MAD_DEFAULT])
    for layer, target in zip(model, KURTOSES_NEAR_LOG_MAD_DEFAULT):
        layer.weight.set_value(array_with_kurtosis(target, (8, 8), rng).astype("float32"))
    last = len(model) - 1
    plan = plan_kure(model, auto_exclude="log_mad")
    assert [row.kurtosis for row in plan.rows if row.name.endswith("weight")] == \
        pytest.approx(KURTOSES_NEAR_LOG_MAD_DEFAULT, rel=1e-4)
    assert plan.chosen == [f"{i}.weight" for i in range(last)]  # 12.0 (3.1 robust std) kept, 18.4 (4.1) not
    assert plan_kure(model, auto_exclude="log_mad", mad_k=5.0).chosen == [f"{i}.weight" for i in range(last + 1)]


def test_mean_std_misses_two_outliers_that_log_mad_catches():
    shapes = {f"t{i}": [64, 64] for i in range(12)}
    values = {name: 2.0 + 0.1 * i for i, name in enumerate(shapes)}
    values.update(t3=5e3, t9=4e3)  # the two inflate the std enough to hide each other
    assert select_tensors(shapes, values, auto_exclude="mean_std").chosen == list(shapes)
    assert select_tensors(shapes, values, auto_exclude="log_mad").chosen == [n for n in shapes if n not in ("t3", "t9")]
    # the band is computed over the tensors the other criteria keep
    assert select_tensors(shapes, values, exclude=["t9"], auto_exclude="mean_std").chosen == \
        [n for n in shapes if n not in ("t3", "t9")]


def test_plan_rows_hold_every_tensor_with_its_kurtosis_and_reason():
    net = Net()
    plan = plan_kure(net, exclude=["fc2.weight"], min_size=40)
    assert [row.name for row in plan.rows] == [name for name, _ in net.named_parameters()]
    by_name = {row.name: row for row in plan.rows}
    for name, param in net.named_parameters():
        row = by_name[name]
        assert row.shape == tuple(param.shape) and row.size == int(np.prod(param.shape))
        np.testing.assert_allclose(row.kurtosis, ref_kurtosis(param.numpy()) if param.numpy().std() else 0.0,
                                   rtol=1e-4)
    assert by_name["fc1.weight"].chosen and by_name["fc1.weight"].reason == "chosen"
    assert by_name["conv.weight"].reason == "size 36 < min_size 40"
    assert by_name["fc2.weight"].reason == "exclude pattern fc2.weight"
    assert by_name["fc1.bias"].reason == "fewer than 2 dims (not a weight)"
    assert by_name["conv.weight"].layer_type == "Conv2D"
    text = str(plan).splitlines()
    assert text[0].startswith("KURE plan: 1 of 6 tensors chosen")
    assert len(text) == 2 + len(plan.rows)
    assert all(any(line.startswith(row.name + " ") for line in text) for row in plan.rows)
    assert plan.to_dict()["tensors"][2]["chosen"] is True
    assert net.fc1.weight.regularizer is None  # planning changes nothing


def test_attach_keeps_existing_l2_and_the_optimizers_weight_decay_exact_sgd_update():
    paddle.seed(1)
    model = paddle.nn.Sequential(
        paddle.nn.Linear(6, 5, weight_attr=paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.02))),
        paddle.nn.Linear(5, 3))
    plan = attach_kure(model, coeff=0.8, target=1.8, l2_coeff=0.05)
    assert plan.chosen == ["0.weight", "1.weight"]
    assert [row.l2_coeff for row in plan.rows if row.chosen] == [0.02, 0.05]
    assert "coeff 0.8 (each 0.4)" in str(plan) and "(l2 0.02)" in str(plan)
    before = {name: p.numpy().astype("float64") for name, p in model.named_parameters()}
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters(),
                               weight_decay=paddle.regularizer.L2Decay(0.05))
    model(paddle.randn([4, 6])).square().mean().backward()
    grads = {name: p.grad.numpy().astype("float64") for name, p in model.named_parameters()}
    opt.step()
    l2 = {"0.weight": 0.02, "1.weight": 0.05}
    for name, p in model.named_parameters():
        w, g = before[name], grads[name]
        if name in l2:  # w - lr * (g + l2 * w + coeff / L * d/dw (K - 1.8)^2)
            expected = w - 0.1 * (g + kure_term(w, 0.4, 1.8, l2_coeff=l2[name]))
        else:
            expected = w - 0.1 * (g + 0.05 * w)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=name)
    # attaching again keeps the l2 inside the KurtosisDecay
    again = attach_kure(model, coeff=1.0, include=["0.weight"])
    assert again.rows[0].l2_coeff == 0.02 and model[0].weight.regularizer.coeff == 1.0


def test_attach_refuses_to_drop_another_regularizer_and_an_empty_selection():
    model = paddle.nn.Sequential(
        paddle.nn.Linear(6, 5, weight_attr=paddle.ParamAttr(regularizer=paddle.regularizer.L1Decay(0.1))),
        paddle.nn.Linear(5, 3))
    with pytest.raises(ValueError, match="0.weight has regularizer L1Decay"):
        attach_kure(model)
    assert model[1].weight.regularizer is None  # nothing was changed
    with pytest.raises(ValueError, match="chose no parameter"):
        attach_kure(model, exclude=[".*"])
    with pytest.raises(ValueError, match=r"KurtosisDecay.coeff must be a finite number in \[0, "):
        attach_kure(model, coeff=-1.0, include=["1.weight"])


def test_kurtosis_loss_matches_scipy_and_its_gradient_central_differences():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(5, 4)), rng.laplace(size=(7,)), rng.uniform(size=(3, 3))]
    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in arrays]
    terms = np.array([(ref_kurtosis(a) - 1.8) ** 2 for a in arrays])
    for reduction, expected in (("mean", terms.mean()), ("sum", terms.sum()), ("none", terms)):
        np.testing.assert_allclose(KurtosisLoss(tensors, reduction=reduction)().numpy(), expected, rtol=1e-10)
    KurtosisLoss(tensors, target=3.0)().backward()
    for a, t in zip(arrays, tensors):
        expected = numerical_grad(lambda v: (ref_kurtosis(v) - 3.0) ** 2, a) / len(arrays)
        np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="reduction must be one of"):
        KurtosisLoss(tensors, reduction="max")
    with pytest.raises(ValueError, match="KurtosisLoss.target must be a finite number > 1, got 1.0"):
        KurtosisLoss(tensors, target=1.0)
    with pytest.raises(TypeError, match="non-empty list of tensors"):
        KurtosisLoss([])


def _hook_count(model):
    return sum(len(layer._forward_post_hooks) for layer in model.sublayers(include_self=True))


def test_activation_hooks_collect_the_output_kurtosis_and_are_removed_cleanly():
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 3))
    x = paddle.randn([32, 6])
    with Kure(model, coeff=0.5, on_activations=True) as kure:
        assert kure.plan.chosen == ["0.weight", "2.weight"] and _hook_count(model) == 2
        out = model(x)
        hidden = model[0](x)  # the last call of each layer counts
        assert kure.activations.pending == 2
        values = [model[0].weight.numpy(), model[2].weight.numpy(), hidden.numpy(), out.numpy()]
        expected = 0.5 * np.mean([(ref_kurtosis(v) - 1.8) ** 2 for v in values])
        loss = kure.loss()
        np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
        assert kure.activations.pending == 0  # nothing of the batch held after the loss is taken
        loss.backward()
        assert model[0].weight.grad is not None
        with pytest.raises(RuntimeError, match="no training forward"):
            kure.loss()
        model.eval()
        model(x)
        with paddle.no_grad():
            model.train()
            model(x)
        assert kure.activations.pending == 0  # eval and no-grad passes are not recorded
    assert _hook_count(model) == 0
    # the recorded output is freed with the loss: no reference stays in the hooks
    term = ActivationKurtosis(model, ["2"], coeff=1.0)
    out = model(x)
    ref = weakref.ref(out)
    term.loss().backward()
    del out
    gc.collect()
    assert ref() is None
    term.remove()
    assert _hook_count(model) == 0


def test_kure_helper_weights_only_activations_only_and_errors():
    model = Net()
    x = paddle.randn([2, 1, 4, 4])
    weights_only = Kure(model, coeff=2.0, layer_types=["Linear"], reduction="sum")
    expected = 2.0 * sum((ref_kurtosis(p.numpy()) - 1.8) ** 2 for p in (model.fc1.weight, model.fc2.weight))
    np.testing.assert_allclose(float(weights_only.loss()), expected, rtol=1e-4)
    assert _hook_count(model) == 0
    with Kure(model, on_weights=False, on_activations=True, layers=["fc1"]) as acts:
        model(x)
        np.testing.assert_allclose(float(acts.loss()), (ref_kurtosis(model.fc1(model.conv(x).flatten(1)).numpy())
                                                         - 1.8) ** 2, rtol=1e-4)
    with pytest.raises(ValueError, match="both False"):
        Kure(model, on_weights=False)
    with pytest.raises(ValueError, match="no sublayers named"):
        Kure(model, on_activations=True, layers=["fc9"])
    assert _hook_count(model) == 0


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_static_program_selection_and_attach(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 8], "float32")
            hidden = paddle.static.nn.fc(x, 16, weight_attr=paddle.ParamAttr(
                name="big.w", regularizer=paddle.regularizer.L2Decay(0.03)))
            paddle.static.nn.fc(hidden, 2, weight_attr=paddle.ParamAttr(name="small.w"))
        # a scope where the startup program has not run (the global one may hold other tests' fc_0.b_0)
        plan = plan_kure(main, scope=paddle.static.Scope())
        assert sorted(plan.chosen) == ["big.w", "small.w"] and all(np.isnan(r.kurtosis) for r in plan.rows)
        assert plan_kure(main, min_size=100).chosen == ["big.w"]
        assert plan_kure(main, exclude=[r"big\..*"]).chosen == ["small.w"]
        with pytest.raises(ValueError, match="plan_kure: layer_types needs a dygraph paddle.nn.Layer"):
            plan_kure(main, layer_types=["Linear"])
        with pytest.raises(ValueError, match="run the startup program first"):
            plan_kure(main, auto_exclude="log_mad", scope=paddle.static.Scope())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            paddle.static.Executor(paddle.CPUPlace()).run(startup)
            w = np.array(scope.find_var("big.w").get_tensor())
        planned = {r.name: r.kurtosis for r in plan_kure(main, scope=scope).rows}
        np.testing.assert_allclose(planned["big.w"], ref_kurtosis(w), rtol=1e-6)
        attached = attach_kure(main, coeff=0.6, l2_coeff=0.01, include=[r".*\.w"])
        params = {p.name: p for p in main.global_block().all_parameters()}
        assert isinstance(params["big.w"].regularizer, KurtosisDecay)
        assert params["big.w"].regularizer.l2_coeff == 0.03 and params["small.w"].regularizer.l2_coeff == 0.01
        assert params["big.w"].regularizer.coeff == pytest.approx(0.3)
        assert {r.name: r.l2_coeff for r in attached.rows if r.chosen} == {"big.w": 0.03, "small.w": 0.01}


def test_kurtosis_config_maps_onto_the_selection(tmp_path):
    config = KurtosisConfig(include=("fc*",), exclude=("*.bias",), auto_exclude="log_mad", min_size=10,
                            mad_k=2.0)
    options = config.selection()
    assert options["auto_exclude"] == "log_mad" and options["mad_k"] == 2.0 and options["min_size"] == 10
    assert plan_kure(Net(), **options).chosen == ["fc1.weight", "fc2.weight"]
    assert KurtosisConfig(auto_exclude=True).selection()["auto_exclude"] == "mean_std"  # the old boolean
    assert KurtosisConfig().selection()["auto_exclude"] is None
    with pytest.raises(ValueError, match="auto_exclude must be false, true or one of"):
        KurtosisConfig(auto_exclude="median")
    bad = tmp_path / "bad.yaml"
    bad.write_text("Kurtosis: {auto_exclude_k: 3.0}\n")
    with pytest.raises(ConfigError, match="bad.yaml: Kurtosis: unknown key"):
        load_config(str(bad))
    bad.write_text("Kurtosis: {min_size: -1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: Kurtosis.min_size"):
        load_config(str(bad))


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

def test_plan_text_and_dict_exactly():
    plan = select_tensors({"a.w": [4, 8], "a.b": [8], "c.w": [8, 8]}, {"a.w": 2.0, "a.b": 3.0, "c.w": 50.0},
                          exclude=[r"c\.w"])
    assert str(plan).splitlines() == [
        "KURE plan: 1 of 3 tensors chosen (auto_exclude=None)",
        "name  shape  kurtosis  chosen  reason",
        "a.w   4x8    2         yes     chosen",
        "a.b   8      3         no      fewer than 2 dims (not a weight)",
        r"c.w   8x8    50        no      exclude pattern c\.w",
    ]
    row = {"layer_type": "", "l2_coeff": None}
    assert plan.to_dict() == {"rule": None, "coeff": None, "target": None, "tensors": [
        dict(row, name="a.w", shape=[4, 8], kurtosis=2.0, chosen=True, reason="chosen", size=32),
        dict(row, name="a.b", shape=[8], kurtosis=3.0, chosen=False, reason="fewer than 2 dims (not a weight)", size=8),
        dict(row, name="c.w", shape=[8, 8], kurtosis=50.0, chosen=False, reason=r"exclude pattern c\.w", size=64)]}
    assert plan.coeff is None and plan.target is None


def test_attached_plan_header_and_defaults():
    model = paddle.nn.Sequential(
        paddle.nn.Linear(6, 5, weight_attr=paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.02))),
        paddle.nn.Linear(5, 3))
    plan = attach_kure(model)  # the KURE paper's lambda 1 and target 1.8, no L2 added
    assert str(plan).splitlines()[0] == \
        "KURE plan: 2 of 4 tensors chosen (auto_exclude=None), coeff 1 (each 0.5), target 1.8"
    lines = {line.split()[0]: line for line in str(plan).splitlines()[2:]}
    assert lines["0.weight"].endswith("yes     chosen (l2 0.02)") and lines["1.weight"].endswith("yes     chosen")
    assert (model[1].weight.regularizer.coeff, model[1].weight.regularizer.target) == (0.5, 1.8)
    assert model[1].weight.regularizer.l2_coeff == 0.0 and plan.rows[2].l2_coeff == 0.0
    plan = plan_kure(model).attach()
    assert (plan.coeff, plan.target, model[0].weight.regularizer.coeff) == (1.0, 1.8, 0.5)


def test_attach_validates_the_l2_of_every_parameter_before_changing_any():
    model = paddle.nn.Sequential(
        paddle.nn.Linear(6, 5, weight_attr=paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.02))),
        paddle.nn.Linear(5, 3))
    with pytest.raises(ValueError, match="l2_coeff"):
        attach_kure(model, l2_coeff=-0.1)  # only the second weight would take it
    assert isinstance(model[0].weight.regularizer, paddle.regularizer.L2Decay) and model[1].weight.regularizer is None


def test_parameters_of_the_model_itself_and_reasons_of_each_criterion():
    class Direct(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.scale = self.create_parameter([4, 4])
            self.fc = paddle.nn.Linear(4, 4)

    model = Direct()
    plan = plan_kure(model, include=lambda name, p: name != "fc.bias", layer_types=["Linear"])
    rows = {row.name: row for row in plan.rows}
    assert rows["scale"].layer_type == "Direct" and rows["scale"].reason == "layer type Direct not in layer_types"
    assert rows["fc.bias"].reason == "include predicate is false"
    assert plan.chosen == ["fc.weight"] and plan.rule is None
    assert plan_kure(model, include=["fc.*"]).rows[0].reason == "matches no include pattern"
    assert plan_kure(model, auto_exclude="log_mad").rule == "log_mad"


def test_select_tensors_defaults_missing_values_and_include():
    values = dict(zip([f"t{i}" for i in range(13)], KURTOSES_NEAR_LOG_MAD_DEFAULT))
    shapes = {name: [8, 8] for name in values}
    assert select_tensors(shapes, values, auto_exclude="log_mad").chosen == list(shapes)[:-1]  # default 3.5 MADs
    plan = select_tensors(dict(shapes, extra=[8, 8]), values, include=[r"t1\d?"])
    assert plan.chosen == ["t1", "t10", "t11", "t12"]
    assert np.isnan(plan.rows[-1].kurtosis) and plan.rows[-1].layer_type == ""
    with pytest.raises(ValueError, match=r"auto_exclude needs the kurtosis of \['extra'\]"):
        select_tensors(dict(shapes, extra=[8, 8]), values, auto_exclude="mean_std")
    with pytest.raises(TypeError, match="predicate needs parameters"):
        select_tensors(shapes, values, include=lambda name, p: True)
    # num_std reaches the rule: at 1 std the largest values are out
    assert len(select_tensors(shapes, values, auto_exclude="mean_std", num_std=1.0).chosen) < len(shapes)
    assert select_tensors(shapes, values, auto_exclude="mean_std").chosen == list(shapes)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"exclude": 5}, TypeError, "^plan_kure.exclude must be a list of regular expressions, got 5"),
    ({"include": ["fc1["]}, ValueError, r"^plan_kure.include: 'fc1\[' is not a regular expression"),
    ({"exclude": ["fc1["]}, ValueError, r"^plan_kure.exclude: 'fc1\[' is not a regular expression"),
    ({"layer_types": {"Linear"}}, TypeError, "^plan_kure.layer_types must be a list of layer classes"),
    ({"min_size": True}, TypeError, "^plan_kure.min_size must be an int >= 0, got True"),
    ({"min_size": 1.5}, TypeError, "^plan_kure.min_size must be an int >= 0, got 1.5"),
    ({"num_std": 0}, ValueError, "^plan_kure.num_std must be a finite number > 0, got 0"),
    ({"num_std": True}, TypeError, "^plan_kure.num_std must be a finite number > 0, got True"),
    ({"num_std": float("inf")}, ValueError, "^plan_kure.num_std must be a finite number > 0, got inf"),
    ({"num_std": "3"}, TypeError, "^plan_kure.num_std must be a finite number > 0, got '3'"),
    ({"mad_k": -1.0}, ValueError, r"^plan_kure.mad_k must be a finite number > 0, got -1\.0"),
])
def test_selection_argument_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        plan_kure(Net(), **kwargs)


def test_small_positive_band_widths_are_accepted():
    assert plan_kure(Net(), auto_exclude="log_mad", mad_k=0.5, num_std=0.5).rule == "log_mad"


def test_loss_defaults_and_activation_term_value():
    rng = np.random.default_rng(4)
    arrays = [rng.laplace(size=(6, 5)), rng.uniform(size=(9,))]
    terms = [(ref_kurtosis(a) - 1.8) ** 2 for a in arrays]
    np.testing.assert_allclose(float(kurtosis_penalty([kurtosis(paddle.to_tensor(a)) for a in arrays])),
                               np.mean(terms), rtol=1e-10)  # default target 1.8, mean
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 3))
    x = paddle.randn([32, 6])
    with ActivationKurtosis(model, ["0"]) as default:
        out = model[0](x)
        np.testing.assert_allclose(float(default.loss()), (ref_kurtosis(out.numpy()) - 1.8) ** 2, rtol=1e-4)
    with ActivationKurtosis(model, ("0", "2"), coeff=0.5, target=3.0, reduction="sum") as term:
        hidden, out = model[0](x), model(x)
        expected = 0.5 * sum((ref_kurtosis(v.numpy()) - 3.0) ** 2 for v in (hidden, out))
        np.testing.assert_allclose(float(term.loss()), expected, rtol=1e-4)


def test_kure_names_nested_layers_and_plans_nothing_for_named_activations():
    model = paddle.nn.Sequential(paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU()),
                                 paddle.nn.Linear(8, 2))
    with Kure(model, on_activations=True) as kure:
        assert kure.activations.layer_names == ["0.0", "1"]  # the layer of "0.0.weight" is "0.0"
    with Kure(model, on_weights=False, on_activations=True, layers=["1"]) as kure:
        assert kure.plan is None and kure.weights is None


@pytest.mark.parametrize("make, error, words", [
    (lambda m, t: kurtosis_penalty([t], target=1.0), ValueError,
     r"^kurtosis_penalty.target must be a finite number > 1"),
    (lambda m, t: kurtosis_penalty([t], reduction="max"), ValueError, r"^kurtosis_penalty.reduction must be one of"),
    (lambda m, t: KurtosisLoss([t], target=1.0), ValueError, r"^KurtosisLoss.target must be a finite number > 1"),
    (lambda m, t: KurtosisLoss([t], target="2"), TypeError, r"^KurtosisLoss.target must be"),
    (lambda m, t: KurtosisLoss([t], target=True), TypeError, r"^KurtosisLoss.target must be"),
    (lambda m, t: KurtosisLoss(t), TypeError, "^KurtosisLoss: params must be a non-empty list"),
    (lambda m, t: KurtosisLoss(iter([t])), TypeError, "^KurtosisLoss: params must be a non-empty list"),
    (lambda m, t: ActivationKurtosis(m, ["0"], coeff=-1.0), ValueError, r"^ActivationKurtosis.coeff must be"),
    (lambda m, t: ActivationKurtosis(m, ["0"], coeff=float("inf")), ValueError, r"^ActivationKurtosis.coeff"),
    (lambda m, t: ActivationKurtosis(m, ["0"], coeff="1"), TypeError, r"^ActivationKurtosis.coeff"),
    (lambda m, t: ActivationKurtosis(m, ["0"], coeff=True), TypeError, r"^ActivationKurtosis.coeff"),
    (lambda m, t: ActivationKurtosis(m, ["0"], target=0.5), ValueError, r"^ActivationKurtosis.target"),
    (lambda m, t: ActivationKurtosis(m, {"0"}), TypeError, "^ActivationKurtosis: layer_names must be a list"),
    (lambda m, t: Kure(m, coeff=-1.0), ValueError, r"^Kure.coeff must be"),
    (lambda m, t: Kure(m, target=1.0), ValueError, r"^Kure.target must be"),
    (lambda m, t: Kure(m, on_weights=1), TypeError, r"^Kure.on_weights must be true or false"),
    (lambda m, t: Kure(m, on_activations="yes"), TypeError, r"^Kure.on_activations must be true or false"),
])
def test_loss_argument_errors_name_their_owner(make, error, words):
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 4))
    with pytest.raises(error, match=words):
        make(model, paddle.randn([4, 4]))


def test_zero_coeff_is_allowed():
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 4))
    assert float(Kure(model, coeff=0).loss()) == 0.0
    ActivationKurtosis(model, ["0"], coeff=0).remove()


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_attach_refuses_a_program_that_already_has_its_gradient_ops(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 8], "float32")
            paddle.optimizer.SGD(0.1).minimize(paddle.static.nn.fc(x, 2).mean())
        with pytest.raises(ValueError, match="^attach_kure: the Program already has its gradient ops"):
            attach_kure(main)


def test_param_filter_defaults_choose_every_shape_and_describe_the_criteria():
    chooser = ParamFilter("owner")
    assert chooser.reason_left_out("scalar", ()) is None and chooser.reason_left_out("empty", (0, 3)) is None
    chooser.check(["a"])  # layers are assumed present by default
    ParamFilter("owner", layer_types=["Linear"]).check(["a"])
    assert (ParamFilter("owner", include=[r"fc\..*"], exclude=["b"], layer_types=[paddle.nn.Linear, "Conv2D"],
                        min_size=4).describe()
            == "include=['fc\\\\..*'], exclude=['b'], layer_types=['Linear', 'Conv2D'], min_size=4")
    assert ParamFilter("owner", include=lambda name, p: True).describe().startswith("include=a predicate, ")
    with pytest.raises(ValueError, match=r"^owner\.min_ndim must be an int >= 0, got -1$"):
        ParamFilter("owner", min_ndim=-1)
