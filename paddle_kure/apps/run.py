"""The ``paddle-kure run`` pipeline on Fashion-MNIST: FP32 and FP32+KURE, each quantized
post-training (PTQ), against QAT, QAT+PACT, QAT+KURE and QAT+KURE+PACT.

Every quantized model is exported and its accuracy measured with ``paddle.inference``.
Each finished stage is recorded under ``OUTPUT/stages/`` with a fingerprint of the
config keys it depends on and the checksums of its files; with ``--resume`` finished
stages are skipped and an interrupted one continues from its last good epoch
checkpoint, and a changed config is refused, naming the keys. One run at a time
writes into a folder (``OUTPUT/.lock``). A stage whose loss or weights become NaN or
infinite is recorded as diverged (:func:`run_from_config` reports it).
"""
from __future__ import annotations

import functools
import os
import time

from .run_outputs import precision_name, write_outputs

# the FP32 model each PTQ method calibrates (its weights file and stage)
PTQ_SOURCES = {"ptq": "fp32", "ptq_kure": "fp32_kure"}


def choose_kure_weights(model, config, source: str = "<config>") -> list:
    """Names of the weights KURE regularizes: the ``Kurtosis`` section's selection
    (:meth:`paddle_kure.apps.run_config.KurtosisConfig.selection`, see
    :func:`paddle_kure.plan_kure`) on ``model``, the trained FP32 model. No weight
    chosen is a ConfigError naming ``source`` (the config file)."""
    from paddle_kure import plan_kure
    from paddle_kure.apps.run_config import ConfigError

    config.check_names([name for name, _ in model.named_parameters()], source)
    plan = plan_kure(model, **config.selection())
    if not plan.chosen:  # the patterns as the config wrote them, not as regular expressions
        measured = ", ".join(f"{row.name} {row.kurtosis:.4g}" for row in plan.rows if len(row.shape) >= 2)
        raise ConfigError(f"{source}: Kurtosis: include {list(config.include)}, exclude {list(config.exclude)}, "
                          f"layer_types {list(config.layer_types)}, min_size {config.min_size} and auto_exclude "
                          f"{config.auto_exclude!r} chose no weight (FP32 kurtosis: {measured})")
    return plan.chosen


class RunPipeline:
    """One ``paddle-kure run``: stages, their records and the outputs.

    Experiments reuse its stages (``fp32``, ``qat``, ...) to train models exactly as
    ``run`` does (``experiments/robustness_fashion_mnist.py``).
    """

    def __init__(self, config, output_dir, resume, progress):
        import paddle

        from paddle_kure.data import load_fashion_mnist

        self.config, self.output_dir, self.resume, self.progress = config, output_dir, resume, progress
        self.world_size, self.rank = paddle.distributed.get_world_size(), paddle.distributed.get_rank()
        if self.world_size > 1:
            paddle.distributed.init_parallel_env()
        g = config.Global
        self.data = load_fashion_mnist(g.data_dir, val_size=g.val_size, train_size=g.train_size,
                                       test_size=g.test_size, seed=g.seed, download=g.download)
        self.input_spec = [paddle.static.InputSpec([None, 1, 28, 28], "float32", "image")]
        for sub in ("stages", "checkpoints", "export"):
            os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
        self.log(f"data: {self.data}")

    def log(self, message):
        if self.rank == 0:
            line = f"[{time.strftime('%H:%M:%S')}] {message}"
            print(line, flush=True)
            with open(os.path.join(self.output_dir, "run.log"), "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def _stage_file(self, name):
        return os.path.join(self.output_dir, "stages", name + ".json")

    def stage(self, name, work):
        """Runs ``work() -> dict`` unless ``--resume`` finds the stage recorded; a
        divergence gives the record ``{"status": "diverged", "stage", "epoch", "step", "cause"}``."""
        import paddle

        from paddle_kure.apps.runguard import stage_files, stage_fingerprint
        from paddle_kure.errors import DivergenceError
        from paddle_kure.runio import read_record, write_record

        path, fingerprint = self._stage_file(name), stage_fingerprint(self.config, name)
        if self.resume:
            record, problem = read_record(path, fingerprint)
            if problem:
                self.log(f"{name}: {problem}; the stage runs again")
            if record is not None:
                self.log(f"{name}: finished in an earlier run, skipped")
                return record
        start = time.time()
        try:
            record = dict(work(), stage=name, seconds=round(time.time() - start, 1))
        except DivergenceError as err:
            self.log(str(err))
            return err.record()
        if self.rank == 0:
            write_record(path, record, fingerprint, stage_files(self.output_dir, name, record))
        if self.world_size > 1:
            paddle.distributed.barrier()
        self.log(f"{name}: " + ", ".join(f"{k}={v}" for k, v in record.items()
                                          if k in ("val_acc", "test_acc", "test_acc_dygraph", "seconds")))
        return record

    def new_model(self, fp32_weights=None):
        import paddle

        from paddle_kure.models import SmallCNN
        from paddle_kure.runio import set_state_strictly

        paddle.seed(self.config.Global.seed)
        # A fresh name generator per model: every stage's model, and so every export,
        # names its weights alike (conv2d_0.w_0 is the first conv), which is what the
        # weight patterns of a compress config match against.
        with paddle.utils.unique_name.guard():
            model = SmallCNN()
        if fp32_weights is not None:
            set_state_strictly(model, paddle.load(fp32_weights), fp32_weights)
        return model

    def train(self, model, name, epochs, learning_rate, extra_loss=None, pruner=None):
        import paddle

        from paddle_kure.apps.runguard import stage_fingerprint
        from paddle_kure.train import fit, make_optimizer

        t = self.config.TrainConfig
        optimizer = make_optimizer(t.optimizer, learning_rate, model.parameters(), t.weight_decay)
        trained = paddle.DataParallel(model) if self.world_size > 1 else model
        return fit(trained, optimizer, self.data.train_images, self.data.train_labels, epochs, t.batch_size,
                   seed=self.config.Global.seed, extra_loss=extra_loss,
                   step_callbacks=[lambda step, loss: pruner.step()] if pruner else (),
                   epoch_callbacks=[lambda epoch: pruner.end_epoch()] if pruner else (),
                   stateful=[pruner] if pruner else (),
                   checkpoint_dir=os.path.join(self.output_dir, "checkpoints", name), resume=self.resume,
                   progress=self.progress, desc=name, fingerprint=stage_fingerprint(self.config, name))

    def exported_accuracy(self, path):
        from paddle_kure.quant import InferenceModel
        from paddle_kure.train import accuracy

        predictor = InferenceModel(path)
        batch = self.config.TrainConfig.eval_batch_size
        return {"val_acc": accuracy(predictor.predict(self.data.val_images, batch_size=batch), self.data.val_labels),
                "test_acc": accuracy(predictor.predict(self.data.test_images, batch_size=batch), self.data.test_labels),
                "export": os.path.relpath(path, self.output_dir)}

    def weight_kurtosis(self, model):
        """Kurtosis of every 2+ dimensional weight, by the FP32 model's structured name
        (QAT wraps each layer: ``conv1._layer.weight`` is ``conv1.weight``)."""
        from paddle_kure import kurtosis

        return {name.replace("._layer.", "."): float(kurtosis(p.detach()))
                for name, p in model.named_parameters() if len(p.shape) >= 2}

    def export_fp32(self, model, record):
        import paddle

        if self.rank == 0:
            path = os.path.join(self.output_dir, "export", record["method"])
            with paddle.pir_utils.OldIrGuard():  # .pdmodel, as the quantized exports
                paddle.jit.save(model, path, input_spec=self.input_spec)
            record.update(self.exported_accuracy(path), weight_kurtosis=self.weight_kurtosis(model))
        return record

    def fp32(self):
        from paddle_kure.runio import atomic_save

        t = self.config.TrainConfig
        model = self.new_model()
        history = self.train(model, "fp32", t.epochs, t.learning_rate)
        if self.rank == 0:
            atomic_save(model.state_dict(), self.fp32_weights)
        return self.export_fp32(model, {"method": "fp32", "precision": "FP32", "history": history})

    def fp32_kure(self, kure_weights):
        """The KURE paper's main arm: the FP32 model trained as ``fp32`` is (same seed,
        initialization, batch order, epochs and learning rate) with KURE on
        ``kure_weights``, for post-training quantization."""
        from paddle_kure.quant import KureConfig, apply_kure
        from paddle_kure.runio import atomic_save

        t, k = self.config.TrainConfig, self.config.Kurtosis
        model = self.new_model()
        if k.on_weights:
            apply_kure(model, KureConfig(coeff=k.coeff, target=k.target, l2_coeff=t.weight_decay,
                                         params=kure_weights))
        activations = self.activation_kurtosis(model, kure_weights)
        history = self.train(model, "fp32_kure", t.epochs, t.learning_rate,
                             extra_loss=activations.loss if activations else None)
        if activations:
            activations.remove()
        if self.rank == 0:
            atomic_save(model.state_dict(), self.weights_file("fp32_kure"))
        return self.export_fp32(model, {"method": "fp32_kure", "precision": "FP32", "history": history,
                                        "kure_weights": list(kure_weights)})

    def activation_kurtosis(self, model, kure_weights):
        """With ``Kurtosis.on_activations``: the loss term on the outputs of the layers
        owning ``kure_weights`` (remove it after training); else None."""
        from paddle_kure import ActivationKurtosis

        k = self.config.Kurtosis
        if not k.on_activations:
            return None
        return ActivationKurtosis(model, sorted({w.rsplit(".", 1)[0] for w in kure_weights}), k.coeff, k.target)

    def fp32_more(self):
        """The FP32 model trained the QAT epochs further, as QAT trains it: the reference
        that keeps the QAT rows from being credited with their extra training."""
        t = self.config.TrainConfig
        model = self.new_model(self.fp32_weights)
        history = self.train(model, "fp32_more", t.qat_epochs, t.qat_learning_rate)
        return self.export_fp32(model, {"method": "fp32_more", "precision": "FP32", "history": history})

    def weights_file(self, stage):
        """The weights an FP32 stage (``fp32``, ``fp32_kure``) saved for the later stages."""
        return os.path.join(self.output_dir, stage + ".pdparams")

    @property
    def fp32_weights(self):
        return self.weights_file("fp32")

    def ptq(self, method, weight_bits, activation_bits):
        """Post-training quantization of the FP32 model ``PTQ_SOURCES[method]``,
        calibrated as the ``QuantPost`` section says."""
        from paddle_kure.quant import post_training_quantize

        if self.rank != 0:
            return {}
        q = self.config.QuantPost
        source = PTQ_SOURCES[method]
        model = self.new_model(self.weights_file(source))
        images = self.data.train_images
        calib = [images[i:i + q.batch_size] for i in range(0, q.batch_nums * q.batch_size, q.batch_size)]
        precision = precision_name(weight_bits, activation_bits)
        path = os.path.join(self.output_dir, "export", f"{method}_{precision.lower()}")
        post_training_quantize(model, calib, self.config.quant_config(weight_bits, activation_bits), path,
                               self.input_spec, batch_nums=q.batch_nums, algo=q.algo)
        return {"method": method, "precision": precision, "fp32_model": source,
                "calibration": {"algo": q.algo, "batch_nums": q.batch_nums, "batch_size": q.batch_size},
                **self.exported_accuracy(path)}

    def qat(self, method, weight_bits, activation_bits, kure_weights):
        import paddle

        from paddle_kure.quant import KureConfig, PACTConfig, export_quantized, prepare_qat
        from paddle_kure.train import evaluate

        t, k = self.config.TrainConfig, self.config.Kurtosis
        name = f"{method}_{precision_name(weight_bits, activation_bits).lower()}"
        use_kure, use_pact = method.startswith("qat_kure"), method.endswith("_pact")
        quant_config = self.config.quant_config(weight_bits, activation_bits, use_pact)
        model = self.new_model(self.fp32_weights)
        pruner = self.config.Prune.build_pruner(model) if self.config.Prune is not None else None
        kure = (KureConfig(coeff=k.coeff, target=k.target, l2_coeff=t.weight_decay, params=kure_weights)
                if use_kure and k.on_weights else None)
        prepare_qat(model, quant_config, kure=kure, pact=PACTConfig() if use_pact else None,
                    calib_batch=paddle.to_tensor(self.data.train_images[:t.batch_size]) if use_pact else None)
        activations = self.activation_kurtosis(model, kure_weights) if use_kure else None
        history = self.train(model, name, t.qat_epochs, t.qat_learning_rate,
                             extra_loss=activations.loss if activations else None, pruner=pruner)
        if activations:
            activations.remove()
        record = {"method": method, "precision": precision_name(weight_bits, activation_bits), "history": history}
        if self.rank == 0:
            path = os.path.join(self.output_dir, "export", name)
            record["test_acc_dygraph"] = evaluate(model, self.data.test_images, self.data.test_labels,
                                                  t.eval_batch_size)
            export_quantized(model, path, self.input_spec, quant_config)
            record.update(self.exported_accuracy(path), weight_kurtosis=self.weight_kurtosis(model),
                          kure_weights=list(kure_weights) if use_kure else [])
            if pruner is not None:
                record.update(sparsity=pruner.sparsity(), sparsity_table=pruner.sparsity_table())
        return record

    def run(self):
        fp32 = self.stage("fp32", self.fp32)
        if fp32.get("status") == "diverged":
            return [fp32]  # every other stage starts from the FP32 weights
        # every rank reads the weights rank 0 saved before the stage's barrier
        kure_weights = choose_kure_weights(self.new_model(self.fp32_weights), self.config.Kurtosis,
                                           self.config.source)
        self.log(f"KURE regularizes {kure_weights}")
        records = [fp32, self.stage("fp32_more", self.fp32_more)]
        methods = self.config.methods()
        if "ptq_kure" in methods:
            fp32_kure = self.stage("fp32_kure", functools.partial(self.fp32_kure, kure_weights))
            records.append(fp32_kure)
            if fp32_kure.get("status") == "diverged":
                methods.remove("ptq_kure")  # nothing to quantize
        for weight_bits, activation_bits in self.config.precisions():
            for method in methods:
                name = f"{method}_{precision_name(weight_bits, activation_bits).lower()}"
                if method in PTQ_SOURCES:
                    work = functools.partial(self.ptq, method, weight_bits, activation_bits)
                else:
                    work = functools.partial(self.qat, method, weight_bits, activation_bits, kure_weights)
                records.append(self.stage(name, work))
        return records


def run_from_config(path=None, output_dir=None, resume=False, progress=True):
    """Runs the whole pipeline of the YAML config at ``path`` (default: the packaged
    one) into ``output_dir`` (default: its ``Global.output_dir``) and writes the
    outputs. Returns ``(table, diverged)``: the results table (markdown; None on
    ranks other than 0) and the names of the stages that diverged.

    The config is checked against the model before anything runs; the folder is
    locked for the run; without ``resume`` the stage records and checkpoints of an
    earlier run are removed (and logged), with it a changed config is refused.
    Raises :class:`paddle_kure.errors.UserError` (a ConfigError, a locked folder, an
    unreadable data set) naming the file and the key.
    """
    import random

    import numpy as np
    import paddle

    from paddle_kure.apps.run_config import default_config_path, load_config
    from paddle_kure.apps.runguard import check_config_against_model, check_resumable, clear_earlier_run
    from paddle_kure.errors import UserError
    from paddle_kure.models import SmallCNN
    from paddle_kure.runio import OutputLock, atomic_write

    path = path or default_config_path()
    config = load_config(path)
    check_config_against_model(config, SmallCNN())
    output_dir = output_dir or config.Global.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"{output_dir}: the output folder is a file")
    rank = paddle.distributed.get_rank()
    lock = OutputLock(output_dir).acquire() if rank == 0 else None  # the other ranks belong to this run
    try:
        if lock is not None and lock.took_over_from is not None:
            print(f"paddle-kure: {output_dir}: took over the lock of PID {lock.took_over_from}, which is no longer "
                  f"running", flush=True)
        if rank == 0 and resume:
            check_resumable(output_dir, config)  # before config_used.yaml or anything else is written
        if rank == 0 and not resume:
            for removed in clear_earlier_run(output_dir):
                print(f"paddle-kure: not resuming: removed {removed} of an earlier run", flush=True)
        seed = config.Global.seed
        random.seed(seed)
        np.random.seed(seed)
        paddle.seed(seed)
        start = time.time()
        try:
            run = RunPipeline(config, output_dir, resume, progress=progress)
        except (FileNotFoundError, ValueError) as err:  # reading the data set
            raise UserError(f"{path}: Global.data_dir: {err}") from None
        if run.rank == 0:
            with atomic_write(os.path.join(output_dir, "config_used.yaml")) as f:
                f.write(f"# from {os.path.abspath(path)}\n{config}")
        run.log(f"config: {os.path.abspath(path)} (copy in config_used.yaml)")
        records = run.run()
        diverged = [r["stage"] for r in records if r.get("status") == "diverged"]
        table = None
        if run.rank == 0:
            table = write_outputs(records, config, output_dir)
            run.log(f"done in {time.time() - start:.0f} s; results in {output_dir}/results.md, results.json"
                    + ("" if diverged else ", accuracy.png, kurtosis.png"))
        if diverged:
            run.log(f"diverged: {', '.join(diverged)} (recorded in results.json)")
        return table, diverged
    finally:
        if lock is not None:
            lock.release()
