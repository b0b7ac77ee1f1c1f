"""Static-graph passes: KURE on a Program, PACT for ``paddleslim.quant.quant_aware``,
and the quant_aware -> train -> convert -> save_inference_model path.

KURE (:func:`add_kurtosis_regularization`, :func:`kurtosis_loss`) works on PIR
and legacy Programs. PaddleSlim's ``quant_aware`` and ``convert`` rewrite legacy
Programs only: build the model under ``paddle.pir_utils.OldIrGuard()`` to
quantize it.
"""
from __future__ import annotations


import paddle

from .._validate import check_number
from ..losses import KurtosisLoss
from ..selection import attach_kure, plan_kure
from . import compat
from .compat import allow_input_gradients
from .config import PACTConfig, QuantAwareConfig

__all__ = [
    "add_kurtosis_regularization",
    "kurtosis_loss",
    "pact_preprocess",
    "allow_input_gradients",
    "quant_aware_programs",
    "export_static",
]


def add_kurtosis_regularization(program, params=None, coeff: float = 1.0, target: float = 1.8,
                                l2_coeff: float = 0.0) -> list:
    """The static counterpart of ``prepare_qat(kure=...)``: sets
    ``KurtosisDecay(coeff / L, target, l2_coeff)`` as the regularizer of the
    L chosen parameters of ``program`` (PIR or legacy), before the optimizer's
    ``minimize``; returns their names. ``l2_coeff`` keeps L2 decay on them: a
    parameter's regularizer replaces the optimizer's ``weight_decay`` (a parameter's
    own L2Decay is kept instead). ``params``: names (regular expressions), a
    predicate ``fn(name, param)`` or None (2+ dims); :func:`paddle_kure.attach_kure`
    selects more ways and returns the whole plan.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.quant.static import add_kurtosis_regularization
            >>> paddle.enable_static()
            >>> main, startup = paddle.static.Program(), paddle.static.Program()
            >>> with paddle.static.program_guard(main, startup):
            ...     x = paddle.static.data("x", [None, 8], "float32")
            ...     loss = paddle.mean(paddle.static.nn.fc(x, 4))
            ...     names = add_kurtosis_regularization(main, coeff=0.5, l2_coeff=1e-4)
            ...     _ = paddle.optimizer.SGD(0.1).minimize(loss)
            >>> paddle.disable_static()
    """
    return attach_kure(program, coeff, target, l2_coeff, include=params).chosen


def kurtosis_loss(program, params=None, coeff: float = 1.0, target: float = 1.8):
    """Alias of :class:`paddle_kure.KurtosisLoss` on a Program: the KURE loss term
    ``coeff * mean over chosen parameters of (K - target)^2`` built in ``program``
    (PIR or legacy) with :func:`paddle_kure.kurtosis`; add it to the loss before
    ``minimize``. Call inside the program's ``program_guard``."""
    check_number("kurtosis_loss", "coeff", coeff, low=0.0)
    plan = plan_kure(program, include=params)
    if not plan.chosen:
        raise ValueError("kurtosis_loss: the selection chose no parameter")
    return KurtosisLoss(plan.parameters(), target)() * coeff


def pact_preprocess(pact: PACTConfig | None = None):
    """An ``act_preprocess_func`` for ``paddleslim.quant.quant_aware``: a two-sided
    PACT clip with a trainable alpha per quantized input. Only a constant
    ``pact.init`` is possible here (the graph is built before any data is seen)."""
    from ..nn.pact import pact as pact_op

    pact = pact or PACTConfig(init=6.0)
    if isinstance(pact.init, str):
        raise ValueError(f"pact_preprocess: PACTConfig.init must be a number in static graphs, got {pact.init!r}")

    def preprocess(x):
        # The name derives from the quantized input's, so the training and test
        # programs share one alpha per input.
        attr = paddle.ParamAttr(
            name=f"{x.name}.pact_alpha",
            initializer=paddle.nn.initializer.Constant(float(pact.init)),
            learning_rate=pact.learning_rate,
            regularizer=paddle.regularizer.L2Decay(pact.l2_coeff),
        )
        return pact_op(x, paddle.static.create_parameter([1], "float32", attr=attr), signed=True)

    return preprocess


def _slim_config(config: QuantAwareConfig, slim_options=None) -> dict:
    """PaddleSlim's config dict; ``slim_options`` adds or overrides PaddleSlim keys
    that QuantAwareConfig does not carry (``not_quant_pattern``, ``window_size``, ...)."""
    return dict(config.slim_config(), **(slim_options or {}))


def quant_aware_programs(train_program, test_program, place, config: QuantAwareConfig,
                         pact: PACTConfig | None = None, optimizer_func=None, executor=None, scope=None,
                         slim_options=None):
    """Inserts fake quantization (and, with ``config.use_pact``, PACT) into a legacy
    training Program (after ``minimize``) and its test clone, with
    ``paddleslim.quant.quant_aware``. Returns ``(train, test)``: run ``train``
    (a CompiledProgram) to train, then :func:`export_static` on ``test``.

    Both are built here, before training: building the test program re-runs the
    startup of the PACT alphas it shares with the training program.

    Args:
        optimizer_func: returns the optimizer that trains the PACT alphas (needed
            with ``use_pact``); e.g. ``lambda: paddle.optimizer.Momentum(0.01)``.
        pact (PACTConfig): PACT options, ``init`` a number (default 6.0).
        slim_options (dict): more ``quant_aware`` config keys (see ``_slim_config``).
    """
    if not isinstance(config, QuantAwareConfig):
        raise TypeError(f"config must be a QuantAwareConfig, got {type(config).__name__}")
    for name, program in (("train_program", train_program), ("test_program", test_program)):
        if not isinstance(program, paddle.base.framework.Program):
            raise TypeError(
                f"{name} must be a legacy paddle.static.Program (build it under paddle.pir_utils.OldIrGuard()); "
                f"got {type(program).__name__}"
            )
    if pact is not None and not config.use_pact:
        raise ValueError("quant_aware_programs: pact options were given but QuantAwareConfig.use_pact is false")
    preprocess = None
    if config.use_pact:
        if optimizer_func is None:
            raise ValueError("quant_aware_programs: use_pact needs optimizer_func to train the PACT alphas")
        compat.check_input_gradients(train_program)
        preprocess = pact_preprocess(pact)
    compat.import_paddleslim()
    from paddleslim.quant import quant_aware

    scope = scope or paddle.static.global_scope()
    executor = executor or paddle.static.Executor(place)
    slim_config = _slim_config(config, slim_options)
    common = dict(place=place, config=slim_config, scope=scope, act_preprocess_func=preprocess,
                  optimizer_func=optimizer_func, executor=executor)
    with compat.test_subgraphs_for_test():
        test = quant_aware(test_program, for_test=True, **common)
    compat.quantize_weights_with_current_scale(test)
    train = quant_aware(train_program, for_test=False, **common)
    if config.onnx_format:
        for program in (train, test):
            compat.set_program_quantization_range(program)
    return train, test


def export_static(test_program, path: str, feed_names, fetch_vars, place, config: QuantAwareConfig,
                  executor=None, scope=None, slim_options=None) -> None:
    """``paddleslim.quant.convert`` of a trained quantized test program, then
    ``paddle.static.save_inference_model`` to ``path + '.pdmodel'/'.pdiparams'``
    (run it with :class:`paddle_kure.quant.InferenceModel`)."""
    compat.import_paddleslim()
    from paddleslim.quant import convert

    scope = scope or paddle.static.global_scope()
    executor = executor or paddle.static.Executor(place)
    with compat.freeze_pass_knows_preprocessed_inputs():
        inference_program = convert(test_program, place, _slim_config(config, slim_options), scope=scope)
    feed_vars = [inference_program.global_block().var(name) for name in feed_names]
    with paddle.static.scope_guard(scope):
        paddle.static.save_inference_model(path, feed_vars, fetch_vars, executor, program=inference_program)
