"""``paddle-kure compress``: quantization-aware training with KURE (and PACT) and
distillation from the FP32 model, on an existing Paddle inference model.

The pipeline (legacy static graphs, PaddleSlim 2.6.0 on Paddle 3.3.1):

1. load the FP32 inference model twice: as the student, whose variables become
   trainable parameters (PaddleSlim's ``recover_inference_program``), and as the
   teacher (``Distillation.teacher_model_dir``, default the same model);
2. the loss: ``sum alpha_k * loss_k(student node k, teacher node k)``, the
   teacher's values computed per batch in its own scope and fed in;
3. KURE (:class:`paddle_kure.KurtosisDecay`) on the chosen weights — by default
   the weights of the ops that get quantized — keeping their L2 decay;
4. ``minimize``, then PaddleSlim ``quant_aware`` on the training program and its
   test clone (:func:`paddle_kure.quant.static.quant_aware_programs`: the project's
   PACT in both, so the exported model computes what was trained);
5. train, evaluating the quantized test program every ``eval_iter`` steps and
   keeping the best weights; ``convert`` and save the INT8 model, with its weights
   stored dequantized on their int8 grid
   (:func:`paddle_kure.quant.program.dequantize_stored_weights`) and without the
   quantize/dequantize pairs ``convert`` makes of the output-scale observers
   (:func:`paddle_kure.quant.compat.drop_output_quantization`);
6. evaluate the FP32 and the compressed model in ``paddle.inference``.

Why not PaddleSlim's ``AutoCompression``: it runs on Paddle 3.3.1 (with
``FLAGS_enable_pir_api=0``) for quantization-aware training with distillation,
but (a) it quantizes its test program without the ``act_preprocess_func``, so the
PACT it trains is missing from the exported model (an exported model with
``use_pact: true`` holds no clip op), and (b) it builds the optimizer and calls
``minimize`` inside ``build_distill_program``, with no place to give chosen
weights their own regularizer, which KURE needs.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time

import numpy as np

from ..runio import atomic_write
from .compress_config import CompressConfig, resolve_reader
from .run_config import ConfigError

__all__ = ["CompressPlan", "compress", "plan_compression"]

MODEL_NAME = "model"  # save_dir/model.pdmodel, model.pdiparams


@contextlib.contextmanager
def _legacy_static():
    import paddle

    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        try:
            yield
        finally:
            paddle.disable_static()


@contextlib.contextmanager
def _naming(source, key):
    """A missing file or a bad value met while using ``key`` of the config at
    ``source`` becomes a ConfigError (one line from the command) naming both."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except (OSError, TypeError, ValueError) as err:  # a bad keyword of the reader function is a TypeError
        raise ConfigError(f"{source}: {key}: {err}") from None


def _log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class CompressPlan:
    """What :func:`compress` will do: the loaded student model, the teacher, the
    ops to quantize and the KURE plan; ``str()`` is the ``--dry-run`` output."""

    def __init__(self, config: CompressConfig, executor, scope):
        from ..quant.program import load_inference_program, quantization_plan, resolve_model_files
        from ..selection import plan_kure

        g, q, d = config.Global, config.QuantAware, config.Distillation
        self.config = config
        with _naming(config.source, "Global.model_dir"):
            self.model_files = resolve_model_files(g.model_dir, g.model_filename, g.params_filename)
        self.program, self.feed_names, self.fetch_names = load_inference_program(
            *self.model_files, executor, scope, trainable=True)
        if g.input_list is not None and sorted(g.input_list) != sorted(self.feed_names):
            raise ConfigError(f"{config.source}: Global.input_list {list(g.input_list)} does not name the model's "
                              f"inputs {self.feed_names}")
        with _naming(config.source, "Distillation.teacher_model_dir"):
            self.teacher_files = (self.model_files if d.teacher_model_dir is None else resolve_model_files(
                d.teacher_model_dir, d.teacher_model_filename, d.teacher_params_filename))
        self.train_reader, self.eval_reader = _readers(config, self.feed_names)
        nodes = list(d.node) or self.fetch_names
        block = self.program.global_block()
        missing = [n for n in nodes if not block.has_var(n)]
        if missing:
            raise ConfigError(f"{config.source}: Distillation.node: the model has no variables {missing} (its "
                              f"outputs are {self.fetch_names})")
        self.distillation = d.per_node(nodes)
        self.ops = quantization_plan(self.program, q.quantize_op_types, q.not_quant_pattern)
        if not any(op.quantized for op in self.ops):
            raise ConfigError(f"{config.source}: QuantAware: no op of the model is quantized: its ops of types "
                              f"{list(q.quantize_op_types)} are {[(op.type, op.reason) for op in self.ops] or 'none'}")
        kure = config.Kurtosis
        kure.check_names([p.name for p in self.program.global_block().all_parameters()], config.source)
        selection = kure.selection()
        if selection["include"] is None:  # default: the weights that get quantized
            selection["include"] = [re.escape(op.weight) for op in self.ops if op.quantized and op.weight]
        with _naming(config.source, "Kurtosis"):  # a pattern that matches no weight
            self.kure = plan_kure(self.program, scope=scope, **selection) if kure.coeff > 0 else None

    def ops_outputs(self, quantized: bool) -> list:
        """Output names of the planned ops that are (or are not) quantized."""
        block = self.program.global_block()
        return [name for op in self.ops if op.quantized == quantized for name in block.ops[op.index].output_arg_names]

    def __str__(self) -> str:
        c = self.config
        g, q, t = c.Global, c.QuantAware, c.TrainConfig
        quantized = [op for op in self.ops if op.quantized]
        lines = [
            f"config: {c.source}",
            f"model: {self.model_files[0]} (inputs {self.feed_names}, outputs {self.fetch_names})",
            f"teacher: {self.teacher_files[0]}",
            "distillation: " + ", ".join(f"{node} ({loss}, alpha {alpha:g})" for node, loss, alpha in self.distillation),
            f"data: {g.reader}(mode, batch_size={g.batch_size}, **{g.reader_args})",
            f"quantization: W{q.weight_bits}A{q.activation_bits}, weights {q.weight_quantize_type}, activations "
            f"{q.activation_quantize_type}, onnx_format {q.onnx_format}, PACT {'yes' if q.use_pact else 'no'}",
            f"ops quantized: {len(quantized)} of {len(self.ops)} of types {list(q.quantize_op_types)}",
        ]
        width = max(len(op.type) for op in self.ops)
        for op in self.ops:
            weight = op.weight or "(activation x activation)"
            lines.append(f"  #{op.index:<4d} {op.type.ljust(width)}  {weight:40s}  {op.reason}")
        if self.kure is None:
            lines.append("KURE: off (Kurtosis.coeff is 0)")
        else:
            lines.append(f"KURE: coeff {c.Kurtosis.coeff:g}, target {c.Kurtosis.target:g}, L2 kept "
                         f"{t.weight_decay():g}")
            lines.append(str(self.kure))
        steps = f"{t.train_iter} steps" if t.train_iter else f"{t.epochs} epochs"
        lines.append(f"training: {steps}, batch {g.batch_size}, {t.optimizer_builder.get('optimizer', {})}, "
                     f"learning_rate {t.learning_rate}, eval every {t.eval_iter} steps")
        lines.append(f"output: {os.path.join(g.save_dir, MODEL_NAME)}.pdmodel, compress.json, compress.md")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": self.model_files[0], "teacher": self.teacher_files[0], "inputs": self.feed_names,
            "outputs": self.fetch_names, "distillation": [list(x) for x in self.distillation],
            "ops": [vars(op) for op in self.ops], "kure": self.kure.to_dict() if self.kure else None,
        }


def plan_compression(config: CompressConfig) -> CompressPlan:
    """Validates ``config`` against its model and reader and returns the plan
    (``paddle-kure compress --dry-run``); trains nothing."""
    import paddle

    with _legacy_static():
        return CompressPlan(config, paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope())


def _readers(config, feed_names):
    """The train and eval readers of ``Global.reader``; the first eval batch is
    checked (the model's inputs and labels), so that ``--dry-run`` tests the reader.
    The train reader is not called: a call draws its shuffled order."""
    g = config.Global
    with _naming(config.source, "Global.reader"):
        reader_fn = resolve_reader(g.reader)
    with _naming(config.source, "Global.reader_args"):
        readers = reader_fn("train", g.batch_size, **g.reader_args), reader_fn("eval", g.batch_size, **g.reader_args)
    with _naming(config.source, "Global.reader"):
        first = next(_batches(readers[1], "eval"), None)
        if first is None:
            raise ValueError("the eval reader gave no batches")
        _feed(first, feed_names, "eval")
        _labels(first)
    return readers


def _batches(reader, what):
    batches = reader() if callable(reader) else reader
    try:
        return iter(batches)
    except TypeError:
        raise TypeError(f"the {what} reader must be a callable returning an iterable of batches (or an iterable), "
                        f"got {type(reader).__name__}") from None


def _feed(batch, names, what):
    if not isinstance(batch, dict):
        raise TypeError(f"the {what} reader's batches must be dicts {{input name: array}}, "
                        f"got {type(batch).__name__}")
    missing = [n for n in names if n not in batch]
    if missing:
        raise ValueError(f"the {what} reader gave a batch without the model inputs {missing} (it has {sorted(batch)})")
    return {n: np.asarray(batch[n]) for n in names}


def _labels(batch):
    if "label" not in batch:
        raise ValueError(f"an eval batch must hold 'label' (class ids) for the accuracy; it has {sorted(batch)}")
    return np.asarray(batch["label"]).reshape(-1)


def _predictions(predict, reader, feed_names):
    """(predicted class ids, labels) of ``predict(feed dict) -> logits`` over the eval reader."""
    predicted, labels = [], []
    for batch in _batches(reader, "eval"):
        logits = np.asarray(predict(_feed(batch, feed_names, "eval")))
        labels.append(_labels(batch))
        predicted.append(logits.reshape(len(labels[-1]), -1).argmax(-1))
    if not labels:
        raise ValueError("the eval reader gave no batches")
    return np.concatenate(predicted), np.concatenate(labels)


def _evaluate(predict, reader, feed_names):
    """Top-1 accuracy of ``predict(feed dict) -> logits`` over the eval reader."""
    predicted, labels = _predictions(predict, reader, feed_names)
    return float((predicted == labels).mean())


def inference_predictions(path, setup, reader, feed_names, threads=1):
    """(predicted class ids, labels) of the saved model ``path`` in a ``paddle.inference`` predictor."""
    from ..quant import InferenceModel

    model = InferenceModel(path, setup=setup, threads=threads)
    return _predictions(lambda feed: model.predict(*[feed[n] for n in model.input_names]), reader, feed_names)


def paired_comparison(predicted, reference, labels) -> dict:
    """How a model's predictions compare with a reference model's on the same examples:
    the share of equal predictions, and the accuracy difference with a 95% interval
    from the per-example differences of correctness (normal approximation)."""
    diff = (predicted == labels).astype(np.float64) - (reference == labels)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return {"agreement": float((predicted == reference).mean()), "accuracy_difference": float(diff.mean()),
            "difference_95": [float(diff.mean() - half), float(diff.mean() + half)]}


def _snapshot(program, scope):
    from paddle.base import core

    values = {}
    for var in program.list_vars():
        if not var.persistable or var.type != core.VarDesc.VarType.LOD_TENSOR:  # feed and fetch lists are not
            continue
        found = scope.find_var(var.name)
        if found is not None and found.get_tensor()._is_initialized():
            values[var.name] = np.array(found.get_tensor())
    return values


def _restore(values, scope, place):
    for name, value in values.items():
        scope.find_var(name).get_tensor().set(value, place)


def _kurtosis_of(names, scope):
    from ..outliers import tensor_kurtosis

    import paddle
    with paddle.base.dygraph.guard():
        return {n: float(tensor_kurtosis(np.array(scope.find_var(n).get_tensor()))) for n in names}


def compress(config: CompressConfig, threads: int = 1) -> dict:
    """Runs the whole compression of ``config`` and writes ``save_dir/model.pdmodel``
    (+ ``.pdiparams``), ``compress.json`` and ``compress.md``; returns the report."""
    import paddle

    from ..quant import PACTConfig
    from ..quant.compat import drop_output_quantization
    from ..quant.program import distillation_loss, load_inference_program, mark_not_quantized, \
        unquantize_inputs, dequantize_stored_weights
    from ..quant.static import allow_input_gradients, export_static, quant_aware_programs

    g, q, t, k = config.Global, config.QuantAware, config.TrainConfig, config.Kurtosis
    paddle.seed(g.seed)
    np.random.seed(g.seed)
    out_path = os.path.join(g.save_dir, MODEL_NAME)
    place = paddle.CPUPlace()
    history = []
    start = time.time()
    with _legacy_static():
        scope, teacher_scope = paddle.static.Scope(), paddle.static.Scope()
        exe = paddle.static.Executor(place)
        plan = CompressPlan(config, exe, scope)
        train_reader, eval_reader = plan.train_reader, plan.eval_reader
        skipped = plan.ops_outputs(quantized=False)  # read before any pass rewrites the program
        os.makedirs(g.save_dir, exist_ok=True)  # once the config proved usable
        _log(f"plan: {sum(op.quantized for op in plan.ops)} ops quantized, "
             f"KURE on {len(plan.kure.chosen) if plan.kure else 0} weights")
        teacher, _, _ = load_inference_program(*plan.teacher_files, exe, teacher_scope)
        nodes = [node for node, _, _ in plan.distillation]
        missing = [n for n in nodes if not teacher.global_block().has_var(n)]
        if missing:
            raise ConfigError(f"{config.source}: Distillation.node: the teacher model has no variables {missing}")
        student = plan.program
        mark_not_quantized(student, q.not_quant_pattern)
        test_program = student.clone(for_test=True)
        startup = paddle.static.Program()
        # new variables get a prefix: generated names would clash with the saved model's (tmp_0, ...)
        with paddle.static.scope_guard(scope), paddle.static.program_guard(student, startup), \
                paddle.utils.unique_name.guard("compress_"):
            loss, teacher_feeds = distillation_loss(student, nodes, [x[1] for x in plan.distillation],
                                                    [x[2] for x in plan.distillation])
            optimizer = t.make_optimizer()
            is_adamw = isinstance(optimizer, paddle.optimizer.AdamW)
            if plan.kure is not None:
                plan.kure.attach(k.coeff, k.target, l2_coeff=0.0 if is_adamw else t.weight_decay())
            if q.use_pact:
                allow_input_gradients(student)
            optimizer.minimize(loss)
            exe.run(startup)
            train, test = quant_aware_programs(
                student, test_program, place, q.quant_config(), pact=PACTConfig(init=6.0) if q.use_pact else None,
                optimizer_func=t.make_optimizer if q.use_pact else None, executor=exe, scope=scope,
                slim_options=q.slim_options())
            kure_before = _kurtosis_of(plan.kure.chosen, scope) if plan.kure else {}
            scheduler = optimizer._learning_rate if isinstance(optimizer._learning_rate,
                                                               paddle.optimizer.lr.LRScheduler) else None

            def evaluate_test_program():
                return _evaluate(lambda feed: exe.run(test, feed=feed, fetch_list=[plan.fetch_names[0]])[0],
                                 eval_reader, plan.feed_names)

            # No evaluation before training: the activation scales start uncalibrated (0.001).
            best = {"accuracy": -1.0, "step": 0, "values": None}
            step, done = 0, False
            epochs = t.epochs if t.train_iter is None else None
            epoch = 0
            while not done:
                batches_this_epoch = 0
                for batch in _batches(train_reader, "train"):
                    feed = _feed(batch, plan.feed_names, "train")
                    targets = exe.run(teacher, feed=feed, fetch_list=nodes, scope=teacher_scope)
                    feed.update(zip(teacher_feeds, targets))
                    value, = exe.run(train, feed=feed, fetch_list=[loss.name])
                    step += 1
                    batches_this_epoch += 1
                    if scheduler is not None:
                        scheduler.step()
                    if step % t.logging_iter == 0:
                        _log(f"step {step}: distillation loss {float(np.mean(value)):.5f}")
                        history.append({"step": step, "loss": float(np.mean(value))})
                    last = t.train_iter is not None and step >= t.train_iter
                    if step % t.eval_iter == 0 or last:
                        acc = evaluate_test_program()
                        history.append({"step": step, "eval_accuracy": acc})
                        _log(f"step {step}: quantized model eval accuracy {acc:.4f}")
                        if acc > best["accuracy"]:
                            best = {"accuracy": acc, "step": step, "values": _snapshot(test, scope)}
                        if t.target_metric is not None and acc >= t.target_metric:
                            _log(f"target_metric {t.target_metric} reached")
                            done = True
                    if last or done:
                        done = True
                        break
                if not batches_this_epoch:
                    raise ValueError("the train reader gave no batches")
                epoch += 1
                if epochs is not None and epoch >= epochs:
                    if step % t.eval_iter:  # the end of training is always evaluated
                        acc = evaluate_test_program()
                        history.append({"step": step, "eval_accuracy": acc})
                        _log(f"step {step}: quantized model eval accuracy {acc:.4f}")
                        if acc > best["accuracy"]:
                            best = {"accuracy": acc, "step": step, "values": _snapshot(test, scope)}
                    done = True
            _restore(best["values"], scope, place)
            kure_after = _kurtosis_of(plan.kure.chosen, scope) if plan.kure else {}
            fetch_vars = [test.global_block().var(n) for n in plan.fetch_names]
            export_static(test, out_path, plan.feed_names, fetch_vars, place, q.quant_config(), executor=exe,
                          scope=scope, slim_options=q.slim_options())
    if q.onnx_format:
        # convert turns every output-scale observer into a quantize/dequantize pair, which
        # training never applied and which oneDNN INT8 would run residual adds through.
        drop_output_quantization(out_path)
    if skipped:
        unquantize_inputs(out_path, skipped)
    dequantize_stored_weights(out_path)
    train_seconds = time.time() - start
    _log(f"saved {out_path}.pdmodel (best eval accuracy {best['accuracy']:.4f} at step {best['step']}); "
         f"evaluating in paddle.inference")
    fp32_path = plan.model_files[0][:-len(".pdmodel")]
    evaluations, fp32_predictions = [], None
    for label, path, setup in (("FP32", fp32_path, "native"), ("FP32", fp32_path, "onednn"),
                               (f"W{q.weight_bits}A{q.activation_bits}", out_path, "native"),
                               (f"W{q.weight_bits}A{q.activation_bits}", out_path, "onednn-int8")):
        row = {"model": label, "path": path, "setup": setup}
        try:
            predicted, labels = inference_predictions(path, setup, eval_reader, plan.feed_names, threads)
        except Exception as err:  # a predictor Paddle cannot build for this model is reported, not fatal
            evaluations.append({**row, "error": str(err).splitlines()[0]})
            continue
        row["accuracy"] = float((predicted == labels).mean())
        if label == "FP32" and setup == "native":  # the reference the compressed rows are paired with
            fp32_predictions = predicted
        elif label != "FP32" and fp32_predictions is not None:
            row.update(paired_comparison(predicted, fp32_predictions, labels))
        evaluations.append(row)
    report = {
        "config": config.to_dict(), "plan": plan.to_dict(), "history": history,
        "best_step": best["step"], "best_eval_accuracy_qat_program": best["accuracy"],
        "kurtosis_before": kure_before, "kurtosis_after": kure_after, "paddle_inference": evaluations,
        "origin_metric": t.origin_metric, "train_seconds": round(train_seconds, 1),
        "exported": out_path + ".pdmodel",
    }
    with atomic_write(os.path.join(g.save_dir, "compress.json")) as f:
        json.dump(report, f, indent=1)
    with atomic_write(os.path.join(g.save_dir, "compress.md")) as f:
        f.write(report_markdown(report))
    return report


def report_markdown(report) -> str:
    """The accuracy table and the KURE tensors of a :func:`compress` report."""
    lines = ["# paddle-kure compress", "", f"Compressed model: `{report['exported']}`; best step "
             f"{report['best_step']}, training {report['train_seconds']} s.", "",
             "| model | paddle.inference setup | eval accuracy | same prediction as FP32 | accuracy - FP32 "
             "(95% interval) |", "|---|---|---:|---:|---|"]
    for row in report["paddle_inference"]:
        value = f"{100 * row['accuracy']:.2f}" if "accuracy" in row else f"failed: {row['error']}"
        paired = ("", "")
        if "agreement" in row:
            low, high = row["difference_95"]
            paired = (f"{100 * row['agreement']:.1f}%",
                      f"{100 * row['accuracy_difference']:+.2f} ({100 * low:+.2f} to {100 * high:+.2f}) points")
        lines.append(f"| {row['model']} | {row['setup']} | {value} | {paired[0]} | {paired[1]} |")
    lines.append("\nThe last two columns pair each example with the FP32 model's prediction on native kernels.")
    if report["origin_metric"] is not None:
        lines.append(f"\nTrainConfig.origin_metric (FP32, as configured): {report['origin_metric']}")
    if report["kurtosis_before"]:
        lines += ["", "| KURE weight | kurtosis before | after |", "|---|---:|---:|"]
        lines += [f"| {name} | {before:.3f} | {report['kurtosis_after'][name]:.3f} |"
                  for name, before in report["kurtosis_before"].items()]
    return "\n".join(lines) + "\n"
