"""MagnitudePruner against numpy references: masks, exact optimizer updates, schedules, exports, resume."""

import numpy as np
import paddle
import pytest
from graph_modes import static_mode

from paddle_kure.prune import (ConstantSchedule, CubicSchedule, LogSchedule, MagnitudePruner, PruneConfig,
                               magnitude_masks, sparsity_table)


def small_mlp():
    return paddle.nn.Sequential(paddle.nn.Linear(6, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 3))


def batches(count, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)).astype("float32"), rng.integers(0, 3, size)) for _ in range(count)]


def train_step(model, opt, x, y):
    loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x)), paddle.to_tensor(y))
    loss.backward()
    opt.step()
    opt.clear_grad()


def expected_pruned(n, sparsity):
    return round(sparsity * n)


# ---- masks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_per_parameter_masks_keep_the_largest_magnitudes(sparsity):
    rng = np.random.default_rng(1)
    arrays = {"a": rng.standard_normal((7, 13)), "b": 0.01 * rng.standard_normal((5, 3, 3))}
    masks = magnitude_masks(arrays, sparsity)
    for name, a in arrays.items():
        k = expected_pruned(a.size, sparsity)
        threshold = np.sort(np.abs(a).ravel())[k - 1]  # the k-th smallest magnitude (values are distinct)
        np.testing.assert_array_equal(masks[name], np.abs(a) > threshold)
        assert masks[name].dtype == bool and masks[name].shape == a.shape


def test_global_masks_rank_across_parameters():
    rng = np.random.default_rng(2)
    arrays = {"big": rng.standard_normal((20, 10)), "small": 0.1 * rng.standard_normal((10, 10))}
    masks = magnitude_masks(arrays, 0.6, granularity="global")
    everything = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
    threshold = np.sort(everything)[expected_pruned(everything.size, 0.6) - 1]
    for name, a in arrays.items():
        np.testing.assert_array_equal(masks[name], np.abs(a) > threshold)
    # the small-scale tensor loses far more than 60%, the large one less
    assert (~masks["small"]).mean() > 0.9 and (~masks["big"]).mean() < 0.5


def test_ties_are_broken_by_position():
    # equal magnitudes: the earlier element is pruned first
    masks = magnitude_masks({"a": np.array([0.5, -0.5, 0.5, 0.1])}, 0.5)
    assert masks["a"].tolist() == [False, True, True, False]
    arrays = {"a": np.array([0.2, 0.0]), "b": np.array([[0.2, 0.1]])}
    masks = magnitude_masks(arrays, 0.75, granularity="global")
    assert masks["a"].tolist() == [False, False] and masks["b"].tolist() == [[True, False]]
    masks = magnitude_masks({"c": np.ones((2, 3))}, 0.5)
    assert masks["c"].tolist() == [[False, False, False], [True, True, True]]


# ---- the optimizer cannot revive pruned weights (dygraph, exact updates) -------------------------------

def momentum(parameters, lr=0.1, mu=0.9):
    velocity = {}

    def update(name, w, g, step):
        velocity[name] = mu * velocity.get(name, 0.0) + g
        return w - lr * velocity[name]
    return paddle.optimizer.Momentum(learning_rate=lr, momentum=mu, parameters=parameters), update


def adam(parameters, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    moments = {}

    def update(name, w, g, step):  # Paddle's Adam folds the bias correction into the learning rate
        m, v = moments.get(name, (0.0, 0.0))
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        moments[name] = (m, v)
        lr_t = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        return w - lr_t * m / (np.sqrt(v) + eps * np.sqrt(1 - beta2 ** step))
    optimizer = paddle.optimizer.Adam(learning_rate=lr, beta1=beta1, beta2=beta2, epsilon=eps,
                                      parameters=parameters)
    return optimizer, update


@pytest.mark.parametrize("make_optimizer", [momentum, adam], ids=["Momentum", "Adam"])
def test_optimizer_state_cannot_revive_pruned_weights(make_optimizer):
    model = small_mlp()
    opt, update = make_optimizer(model.parameters())
    params = dict(model.named_parameters())
    pruner = MagnitudePruner(model, ConstantSchedule(0.6))
    masks = pruner.masks
    assert sorted(masks) == ["0.weight", "2.weight"]
    expected = {name: p.numpy().astype("float64") for name, p in params.items()}
    revived = 0
    for step, (x, y) in enumerate(batches(6), start=1):
        loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x)), paddle.to_tensor(y))
        loss.backward()
        grads = {name: p.grad.numpy().astype("float64") for name, p in params.items()}
        opt.step()
        opt.clear_grad()
        for name in masks:  # before the pruner acts, the optimizer has moved pruned weights off zero
            revived += int(np.count_nonzero(params[name].numpy()[~masks[name]]))
        pruner.step()
        for name in params:
            expected[name] = update(name, expected[name], grads[name], step) * masks.get(name, 1.0)
            np.testing.assert_allclose(params[name].numpy(), expected[name], rtol=2e-5, atol=1e-6)
        for name, mask in masks.items():
            assert np.all(params[name].numpy()[~mask] == 0)
    assert revived > 0  # so the test would catch a pruner that did not re-apply its masks


# ---- schedules through the pruner ----------------------------------------------------------------------

def test_log_schedule_by_epoch():
    model = small_mlp()
    opt = paddle.optimizer.Momentum(0.05, parameters=model.parameters())
    schedule = LogSchedule(0.75, interval_pass=1, end_pass=3)
    pruner = MagnitudePruner(model, schedule)
    for epoch in range(5):
        for name, w in pruner.weights().items():
            assert np.count_nonzero(w == 0) == expected_pruned(w.size, schedule.sparsity(epoch)), (epoch, name)
        for x, y in batches(3, seed=epoch):
            train_step(model, opt, x, y)
            pruner.step()
        pruner.end_epoch()
    assert str(pruner) == ("MagnitudePruner(LogSchedule(sparsity_upper_bound=0.75, interval_pass=1, end_pass=3, "
                           "unit='epoch'), granularity=parameter, 2 parameters, epoch=5, iteration=15, "
                           "target sparsity=0.7500)")


def test_cubic_schedule_by_iteration_with_global_ranking():
    model = small_mlp()
    opt = paddle.optimizer.SGD(0.05, parameters=model.parameters())
    schedule = CubicSchedule(0.2, 0.8, start=2, end=8, frequency=3, unit="iteration")
    pruner = MagnitudePruner(model, schedule, granularity="global")
    total = sum(w.size for w in pruner.weights().values())
    updates = 0
    for t, (x, y) in enumerate(batches(10)):
        zeros = sum(np.count_nonzero(w == 0) for w in pruner.weights().values())
        assert zeros == expected_pruned(total, schedule.sparsity(t)), t
        old_masks = pruner.masks
        train_step(model, opt, x, y)
        # the masks of iteration t + 1 rank the updated weights with the old masks applied
        ranked = {n: w * old_masks.get(n, 1.0) for n, w in pruner.weights().items()}
        pruner.step()
        if schedule.is_update_step(t + 1):
            updates += 1
            magnitudes = np.concatenate([np.abs(w).ravel() for w in ranked.values()])
            threshold = np.sort(magnitudes)[expected_pruned(total, schedule.sparsity(t + 1)) - 1]
            for name, w in ranked.items():
                np.testing.assert_array_equal(pruner.masks[name], np.abs(w) > threshold)
    assert updates == 3  # at iterations 2, 5 and 8
    assert pruner.sparsity() == pytest.approx(expected_pruned(total, 0.8) / total)


# ---- selection -----------------------------------------------------------------------------------------

class TwoConvs(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(1, 4, 3)
        self.conv2 = paddle.nn.Conv2D(4, 4, 3)
        self.norm = paddle.nn.BatchNorm2D(4)
        self.fc = paddle.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.norm(self.conv2(self.conv1(x))).mean(axis=[2, 3]))


@pytest.mark.parametrize("kwargs, names", [
    ({}, ["conv1.weight", "conv2.weight", "fc.weight"]),
    ({"exclude": ["conv1.*"]}, ["conv2.weight", "fc.weight"]),
    ({"layer_types": ["Conv2D"]}, ["conv1.weight", "conv2.weight"]),
    ({"layer_types": [paddle.nn.Linear]}, ["fc.weight"]),
    ({"include": [r"conv.*"], "exclude": [r"conv2\..*"]}, ["conv1.weight"]),
    ({"min_size": 100}, ["conv2.weight"]),
])
def test_selection_by_name_and_layer_type(kwargs, names):
    model = TwoConvs()
    initial = {name: p.numpy() for name, p in model.named_parameters()}
    pruner = MagnitudePruner(model, ConstantSchedule(0.5), **kwargs)
    assert pruner.names == names
    for name, p in model.named_parameters():
        if name in names:
            assert np.count_nonzero(p.numpy() == 0) == expected_pruned(p.size, 0.5)
        else:
            np.testing.assert_array_equal(p.numpy(), initial[name])


@pytest.mark.parametrize("kwargs, error, words", [
    ({"include": ["conv3.*"]}, ValueError, "MagnitudePruner: include: no parameters named ['conv3.*']"),
    ({"exclude": ["conv3.*"]}, ValueError, "MagnitudePruner: exclude: no parameters named ['conv3.*']"),
    ({"include": ["*.weight"]}, ValueError, "MagnitudePruner.include: '*.weight' is not a regular expression"),
    ({"layer_types": ["BatchNorm2D"]}, ValueError, "no parameter with two or more dimensions is selected"),
    ({"exclude": "fc.*"}, TypeError, "MagnitudePruner.exclude must be a list of regular expressions, got 'fc.*'"),
    ({"granularity": "layer"}, ValueError, "MagnitudePruner.granularity must be one of ['parameter', 'global']"),
])
def test_selection_errors(kwargs, error, words):
    with pytest.raises(error) as info:
        MagnitudePruner(TwoConvs(), ConstantSchedule(0.5), **kwargs)
    assert words in str(info.value)


def test_config_globs_become_the_regular_expressions_of_the_shared_selection():
    from paddle_kure import plan_kure

    config = PruneConfig(ConstantSchedule(0.5), include=("conv*",), exclude=("conv2.*",))
    assert config.build_pruner(TwoConvs()).names == ["conv1.weight"]
    # KURE and pruning select with the same engine: the same keys choose the same weights
    selection = {"exclude": [r"conv1\..*"], "layer_types": ["Conv2D", "Linear"], "min_size": 10}
    model = TwoConvs()
    assert plan_kure(model, **selection).chosen == MagnitudePruner(model, ConstantSchedule(0.0), **selection).names


# ---- static Programs -----------------------------------------------------------------------------------

def build_static_mlp():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 6], "float32")
        label = paddle.static.data("label", [None, 1], "int64")
        logits = paddle.static.nn.fc(paddle.static.nn.fc(x, 16, activation="relu"), 3)
        loss = paddle.nn.functional.cross_entropy(logits, label).mean()
        paddle.optimizer.Momentum(0.1, momentum=0.9).minimize(loss)
    return main, startup, x, logits, loss


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_static_program_masks_after_every_step_and_exports_zeros(ir, tmp_path):
    with static_mode(ir):
        main, startup, x, logits, loss = build_static_mlp()
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        scope = paddle.static.global_scope()
        with pytest.raises(ValueError, match="MagnitudePruner: layer_types needs a dygraph paddle.nn.Layer"):
            MagnitudePruner(main, ConstantSchedule(0.5), layer_types=["Linear"])
        # names depend on what ran before in this process; shapes do not
        by_shape = {tuple(p.shape): p.name for p in main.global_block().all_parameters()}
        hidden, output = by_shape[(6, 16)], by_shape[(16, 3)]
        pruner = MagnitudePruner(main, ConstantSchedule(0.7, start=1, unit="iteration"),
                                 exclude=[output.split(".")[0] + ".*"])
        assert pruner.names == [hidden] and pruner.masks == {}
        revived = 0
        for t, (xb, yb) in enumerate(batches(5)):
            exe.run(main, feed={"x": xb, "label": yb.reshape(-1, 1)}, fetch_list=[loss])
            w = pruner.weights()[hidden]
            if t == 0:
                pruned_at = w  # the masks are computed from the weights after iteration 0
            else:
                revived += int(np.count_nonzero(w[~pruner.masks[hidden]]))
            pruner.step()
        mask = pruner.masks[hidden]
        threshold = np.sort(np.abs(pruned_at).ravel())[expected_pruned(mask.size, 0.7) - 1]
        np.testing.assert_array_equal(mask, np.abs(pruned_at) > threshold)
        assert revived > 0
        trained = pruner.weights()[hidden]
        assert np.all(trained[~mask] == 0) and np.count_nonzero(trained[mask]) == mask.sum()
        assert np.count_nonzero(np.array(scope.find_var(output).get_tensor()) == 0) == 0  # excluded

        path = str(tmp_path / "pruned")
        paddle.static.save_inference_model(path, [x], [logits], exe, program=main)
        fresh_scope = paddle.static.Scope()
        with paddle.static.scope_guard(fresh_scope):
            paddle.static.load_inference_model(path, exe)
            exported = np.array(fresh_scope.find_var(hidden).get_tensor())
    np.testing.assert_array_equal(exported, trained)


def test_static_pruner_needs_initialized_weights():
    paddle.enable_static()
    main, _, _, _, _ = build_static_mlp()
    with paddle.static.scope_guard(paddle.static.Scope()):
        with pytest.raises(RuntimeError, match=r"parameter 'fc_\d+\.w_0' is not initialized in the scope; run the"):
            MagnitudePruner(main, ConstantSchedule(0.5))


# ---- exports and checkpoints (dygraph) -----------------------------------------------------------------

def test_jit_save_contains_the_zeros(tmp_path):
    model = small_mlp()
    pruner = MagnitudePruner(model, ConstantSchedule(0.8))
    path = str(tmp_path / "model")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 6], "float32")])
    loaded = paddle.jit.load(path)
    x = paddle.to_tensor(batches(1)[0][0])
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    # the loaded parameters are renamed; their shapes tell them apart here
    loaded_weights = {tuple(p.shape): p.numpy() for p in loaded.parameters()}
    for name, mask in pruner.masks.items():
        w = loaded_weights[mask.shape]
        assert np.all(w[~mask] == 0) and np.count_nonzero(w == 0) == expected_pruned(mask.size, 0.8)
        np.testing.assert_array_equal(w, pruner.weights()[name])


def test_qat_export_contains_the_zeros(tmp_path):
    from paddle_kure.quant import QuantAwareConfig, export_quantized, prepare_qat

    model = small_mlp()
    pruner = MagnitudePruner(model, ConstantSchedule(0.75))
    config = QuantAwareConfig(weight_bits=8, activation_bits=8)
    model = prepare_qat(model, config)  # wraps the layers, keeps the parameter objects the pruner holds
    opt = paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=model.parameters())
    for x, y in batches(3):
        train_step(model, opt, x, y)
        pruner.step()
    path = str(tmp_path / "qat")
    export_quantized(model, path, [paddle.static.InputSpec([None, 6], "float32")], config)
    paddle.enable_static()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope), paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(path, paddle.static.Executor(paddle.CPUPlace()))
        exported = {tuple(v.shape): np.array(scope.find_var(v.name).get_tensor())
                    for v in program.list_vars()
                    if v.persistable and v.name not in ("feed", "fetch") and len(v.shape) == 2}
    for name, mask in pruner.masks.items():
        w = exported[mask.shape]
        assert w.dtype == np.int8  # the quantized weights, and the pruned ones are 0
        assert np.all(w[~mask] == 0) and np.count_nonzero(w[mask]) > 0.9 * mask.sum()


@pytest.mark.parametrize("stop", [5, 6], ids=["at-a-mask-update", "between-updates"])
def test_interrupted_and_resumed_run_ends_identical(stop, tmp_path):
    config = PruneConfig(CubicSchedule(0.0, 0.8, start=1, end=9, frequency=2, unit="iteration"),
                         granularity="global")
    data = batches(12)
    checkpoint = str(tmp_path / "ckpt.pdparams")

    def run(steps, resume=False, save=False):
        # a fresh name space, as in a new process, so the optimizer state finds its parameters
        with paddle.utils.unique_name.guard():
            paddle.seed(7)
            model = small_mlp()
            opt = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=model.parameters())
            pruner = config.build_pruner(model)
            if resume:
                state = paddle.load(checkpoint)
                model.set_state_dict(state["model"])
                opt.set_state_dict(state["opt"])
                pruner.set_state_dict(state["pruner"])
            for x, y in steps:
                train_step(model, opt, x, y)
                pruner.step()
            if save:
                paddle.save({"model": model.state_dict(), "opt": opt.state_dict(),
                             "pruner": pruner.state_dict()}, checkpoint)
            return {n: p.numpy() for n, p in model.named_parameters()}, pruner

    uninterrupted, _ = run(data)
    run(data[:stop], save=True)
    resumed, pruner = run(data[stop:], resume=True)
    assert pruner.iteration == len(data)
    for name, weights in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], weights, err_msg=name)
    assert pruner.sparsity() == pytest.approx(round(0.8 * 144) / 144)


@pytest.mark.parametrize("granularity", ["parameter", "global"])
def test_set_state_dict_applies_the_loaded_masks_to_dense_weights(granularity):
    # resuming onto weights without the zeros (e.g. the dense checkpoint): the loaded masks,
    # not masks recomputed from these weights, decide what is zero
    schedule = ConstantSchedule(0.6, start=3, unit="iteration")  # no update at step 0
    rng = np.random.default_rng(4)
    masks = {"0.weight": rng.random((6, 16)) < 0.5, "2.weight": rng.random((16, 3)) < 0.5}
    model = small_mlp()
    dense = {name: p.numpy().copy() for name, p in model.named_parameters()}
    pruner = MagnitudePruner(model, schedule, granularity=granularity)
    assert pruner.masks == {} and pruner.sparsity() == 0.0
    pruner.set_state_dict({"epoch": 1, "iteration": 2, "masks": masks})
    for name, weights in dense.items():
        expected = weights * masks[name] if name in masks else weights
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), expected, err_msg=name)
    assert (pruner.epoch, pruner.iteration) == (1, 2)
    assert all(np.array_equal(pruner.masks[name], mask) for name, mask in masks.items())


def test_set_state_dict_rejects_foreign_masks():
    pruner = MagnitudePruner(small_mlp(), ConstantSchedule(0.5))
    state = pruner.state_dict()
    with pytest.raises(KeyError, match="missing keys \\['iteration'\\]"):
        pruner.set_state_dict({"epoch": 0, "masks": {}})
    with pytest.raises(KeyError, match="mask for 'fc.weight', which this pruner does not prune"):
        pruner.set_state_dict(dict(state, masks={"fc.weight": np.ones((6, 16), bool)}))
    with pytest.raises(ValueError, match="mask for '0.weight' has shape \\(16, 6\\), the parameter \\(6, 16\\)"):
        pruner.set_state_dict(dict(state, masks={"0.weight": np.ones((16, 6), bool)}))


def test_sparsity_table_counts_zeros():
    table = sparsity_table({"conv.weight": np.array([[0.0, 1.0], [0.0, 0.0]]), "fc.weight": np.arange(4.0)})
    assert table.splitlines() == [
        "| parameter | shape | zeros | sparsity |",
        "|---|---|---:|---:|",
        "| conv.weight | 2x2 | 3 / 4 | 75.00% |",
        "| fc.weight | 4 | 1 / 4 | 25.00% |",
        "| **total** | | 4 / 8 | 50.00% |",
    ]
    model = small_mlp()
    pruner = MagnitudePruner(model, ConstantSchedule(0.5))
    assert "| 0.weight | 6x16 | 48 / 96 | 50.00% |" in pruner.sparsity_table()
    assert "| 0.bias | 16 | 16 / 16 | 100.00% |" in sparsity_table(model)  # Linear biases start at 0


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

def test_global_masks_of_three_parameters_and_the_sparsity_bound():
    arrays = {"a": np.array([0.9, 0.1]), "b": np.array([0.2, 0.8, 0.3]), "c": np.array([0.05, 0.7])}
    masks = magnitude_masks(arrays, 3 / 7, "global")  # the three smallest of all: 0.05, 0.1, 0.2
    assert {k: v.tolist() for k, v in masks.items()} == {
        "a": [True, False], "b": [False, True, True], "c": [False, True]}
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks(arrays, 1.0)


def test_many_ties_are_pruned_in_position_order():
    masks = magnitude_masks({"w": np.zeros(1000)}, 0.5)
    assert masks["w"][500:].all() and not masks["w"][:500].any()


def test_sparsity_table_of_a_one_element_tensor():
    assert sparsity_table({"s": np.zeros(1)}).splitlines()[2:] == ["| s | 1 | 1 / 1 | 100.00% |",
                                                                   "| **total** | | 1 / 1 | 100.00% |"]


def test_parameters_of_the_model_itself_and_shared_parameters():
    class Tied(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.scale = self.create_parameter([4, 4])
            self.first = paddle.nn.Linear(4, 4)
            self.second = paddle.nn.Linear(4, 4)
            self.second.weight = self.first.weight  # tied: pruned once, under its first name
            self.third = paddle.nn.Linear(4, 4)
            self.pair = Pair(self.first.weight)

    class Pair(paddle.nn.Layer):
        def __init__(self, shared):
            super().__init__()
            self.shared = shared  # seen before: skipped, and the next parameter still counts
            self.own = self.create_parameter([4, 4])

    pruner = MagnitudePruner(Tied(), ConstantSchedule(0.5))
    assert pruner.names == ["scale", "first.weight", "third.weight", "pair.own"]


def test_loaded_masks_are_booleans():
    pruner = MagnitudePruner(small_mlp(), ConstantSchedule(0.5, start=3, unit="iteration"))
    pruner.set_state_dict({"epoch": 0, "iteration": 0,
                           "masks": {"0.weight": np.ones((6, 16), dtype=np.int64)}})
    assert pruner.masks["0.weight"].dtype == bool


def test_config_builds_the_pruner_it_describes():
    model = paddle.nn.Sequential(paddle.nn.Embedding(5, 4), *[paddle.nn.Linear(4, 4) for _ in range(3)])
    config = PruneConfig(ConstantSchedule(0.5), granularity="global", include=["[0-2].weight"], exclude=["2.*"],
                         layer_types=["Linear"])  # each option removes one of 0, 2 and 3
    pruner = config.build_pruner(model)
    assert (pruner.granularity, pruner.names) == ("global", ["1.weight"])
    with pytest.raises(TypeError, match="^MagnitudePruner.include must be a list of regular expressions"):
        MagnitudePruner(model, ConstantSchedule(0.5), include="1.weight")


def test_static_pruner_reads_and_writes_the_given_scope():
    with static_mode("legacy"):
        main, startup, _, _, _ = build_static_mlp()
        scope = paddle.static.Scope()  # not the global one
        with paddle.static.scope_guard(scope):
            paddle.static.Executor(paddle.CPUPlace()).run(startup)
        pruner = PruneConfig(ConstantSchedule(0.5)).build_pruner(main, scope=scope, place=paddle.CPUPlace())
        w = np.array(scope.find_var(pruner.names[0]).get_tensor())
        assert np.count_nonzero(w == 0) == w.size // 2


def test_include_predicate_reads_each_parameter():
    # a predicate include gets the parameter itself, here to pick by shape
    pruner = MagnitudePruner(small_mlp(), ConstantSchedule(0.5), include=lambda name, param: param.shape == [16, 3])
    assert pruner.names == ["2.weight"]


def test_config_builds_a_pruner_with_its_min_size():
    # 0.weight has 6 * 16 = 96 elements, 2.weight 16 * 3 = 48
    assert PruneConfig(ConstantSchedule(0.5), min_size=60).build_pruner(small_mlp()).names == ["0.weight"]
    assert PruneConfig(ConstantSchedule(0.5)).build_pruner(small_mlp()).names == ["0.weight", "2.weight"]
