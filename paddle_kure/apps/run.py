"""The ``paddle-kure run`` pipeline: FP32 vs PTQ, QAT, QAT+KURE and QAT+KURE+PACT on Fashion-MNIST.

Every quantized model is exported and its accuracy measured with ``paddle.inference``.
Each finished stage is recorded under ``OUTPUT/stages/``; with ``--resume`` finished
stages are skipped and an interrupted one continues from its last epoch checkpoint.
"""
from __future__ import annotations

import functools
import json
import os
import time

METHOD_TITLES = {
    "fp32": "FP32",
    "fp32_more": "FP32, +QAT epochs",
    "ptq": "PTQ",
    "qat": "QAT",
    "qat_kure": "QAT+KURE",
    "qat_kure_pact": "QAT+KURE+PACT",
}


def precision_name(weight_bits: int, activation_bits: int) -> str:
    return f"W{weight_bits}A{activation_bits}"


def choose_kure_weights(model, config) -> list:
    """Names of the weights KURE regularizes: the ``Kurtosis`` section's selection
    (:meth:`paddle_kure.apps.run_config.KurtosisConfig.selection`, see
    :func:`paddle_kure.plan_kure`) on ``model``, the trained FP32 model."""
    from paddle_kure import plan_kure

    plan = plan_kure(model, **config.selection())
    if not plan.chosen:
        raise ValueError(f"Kurtosis: include {list(config.include)} / exclude {list(config.exclude)} / layer_types "
                         f"{list(config.layer_types)} chose no weight:"
                         f"\n{plan}")
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
        """Runs ``work() -> dict`` unless ``--resume`` finds the stage recorded."""
        import paddle

        path = self._stage_file(name)
        if self.resume and os.path.isfile(path):
            with open(path) as f:
                record = json.load(f)
            self.log(f"{name}: finished in an earlier run, skipped")
            return record
        start = time.time()
        record = dict(work(), stage=name, seconds=round(time.time() - start, 1))
        if self.rank == 0:
            with open(path, "w") as f:
                json.dump(record, f, indent=1)
        if self.world_size > 1:
            paddle.distributed.barrier()
        self.log(f"{name}: " + ", ".join(f"{k}={v}" for k, v in record.items()
                                          if k in ("val_acc", "test_acc", "test_acc_dygraph", "seconds")))
        return record

    def new_model(self, fp32_weights=None):
        import paddle

        from paddle_kure.models import SmallCNN

        paddle.seed(self.config.Global.seed)
        model = SmallCNN()
        if fp32_weights is not None:
            model.set_state_dict(paddle.load(fp32_weights))
        return model

    def train(self, model, name, epochs, learning_rate, extra_loss=None, pruner=None):
        import paddle

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
                   progress=self.progress, desc=name)

    def exported_accuracy(self, path):
        from paddle_kure.quant import InferenceModel
        from paddle_kure.train import accuracy

        predictor = InferenceModel(path)
        batch = self.config.TrainConfig.eval_batch_size
        return {"val_acc": accuracy(predictor.predict(self.data.val_images, batch_size=batch), self.data.val_labels),
                "test_acc": accuracy(predictor.predict(self.data.test_images, batch_size=batch), self.data.test_labels),
                "export": os.path.relpath(path, self.output_dir)}

    def weight_kurtosis(self, model):
        """Kurtosis of every 2+ dimensional weight, by structured name."""
        from paddle_kure import kurtosis

        return {name: float(kurtosis(p.detach())) for name, p in model.named_parameters() if len(p.shape) >= 2}

    def export_fp32(self, model, record):
        import paddle

        if self.rank == 0:
            path = os.path.join(self.output_dir, "export", record["method"])
            with paddle.pir_utils.OldIrGuard():  # .pdmodel, as the quantized exports
                paddle.jit.save(model, path, input_spec=self.input_spec)
            record.update(self.exported_accuracy(path), weight_kurtosis=self.weight_kurtosis(model))
        return record

    def fp32(self):
        import paddle

        t = self.config.TrainConfig
        model = self.new_model()
        history = self.train(model, "fp32", t.epochs, t.learning_rate)
        if self.rank == 0:
            paddle.save(model.state_dict(), self.fp32_weights)
        return self.export_fp32(model, {"method": "fp32", "precision": "FP32", "history": history})

    def fp32_more(self):
        """The FP32 model trained the QAT epochs further, as QAT trains it: the reference
        that keeps the QAT rows from being credited with their extra training."""
        t = self.config.TrainConfig
        model = self.new_model(self.fp32_weights)
        history = self.train(model, "fp32_more", t.qat_epochs, t.qat_learning_rate)
        return self.export_fp32(model, {"method": "fp32_more", "precision": "FP32", "history": history})

    @property
    def fp32_weights(self):
        return os.path.join(self.output_dir, "fp32.pdparams")

    def ptq(self, weight_bits, activation_bits):
        from paddle_kure.quant import post_training_quantize

        if self.rank != 0:
            return {}
        q = self.config.QuantPost
        model = self.new_model(self.fp32_weights)
        images = self.data.train_images
        calib = [images[i:i + q.batch_size] for i in range(0, q.batch_nums * q.batch_size, q.batch_size)]
        path = os.path.join(self.output_dir, "export", f"ptq_{precision_name(weight_bits, activation_bits).lower()}")
        post_training_quantize(model, calib, self.config.quant_config(weight_bits, activation_bits), path,
                               self.input_spec, batch_nums=q.batch_nums, algo=q.algo)
        return {"method": "ptq", "precision": precision_name(weight_bits, activation_bits), **self.exported_accuracy(path)}

    def qat(self, method, weight_bits, activation_bits, kure_weights):
        import paddle

        from paddle_kure.quant import KureConfig, PACTConfig, export_quantized, prepare_qat
        from paddle_kure import ActivationKurtosis
        from paddle_kure.train import evaluate

        t, k = self.config.TrainConfig, self.config.Kurtosis
        name = f"{method}_{precision_name(weight_bits, activation_bits).lower()}"
        use_kure, use_pact = method in ("qat_kure", "qat_kure_pact"), method == "qat_kure_pact"
        quant_config = self.config.quant_config(weight_bits, activation_bits, use_pact)
        model = self.new_model(self.fp32_weights)
        pruner = self.config.Prune.build_pruner(model) if self.config.Prune is not None else None
        kure = (KureConfig(coeff=k.coeff, target=k.target, l2_coeff=t.weight_decay, params=kure_weights)
                if use_kure and k.on_weights else None)
        prepare_qat(model, quant_config, kure=kure, pact=PACTConfig() if use_pact else None,
                    calib_batch=paddle.to_tensor(self.data.train_images[:t.batch_size]) if use_pact else None)
        activations = None
        if use_kure and k.on_activations:
            layers = sorted({w.rsplit(".", 1)[0] for w in kure_weights})
            activations = ActivationKurtosis(model, layers, k.coeff, k.target)
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
        # every rank reads the weights rank 0 saved before the stage's barrier
        kure_weights = choose_kure_weights(self.new_model(self.fp32_weights), self.config.Kurtosis)
        self.log(f"KURE regularizes {kure_weights}")
        records = [fp32, self.stage("fp32_more", self.fp32_more)]
        for weight_bits, activation_bits in self.config.precisions():
            for method in self.config.methods():
                name = f"{method}_{precision_name(weight_bits, activation_bits).lower()}"
                if method == "ptq":
                    work = functools.partial(self.ptq, weight_bits, activation_bits)
                else:
                    work = functools.partial(self.qat, method, weight_bits, activation_bits, kure_weights)
                records.append(self.stage(name, work))
        return records


def results_table(records, precisions) -> str:
    """Markdown: one row per method, test (validation) accuracy per precision, from the exported models."""
    by_key = {(r["method"], r["precision"]): r for r in records}
    methods = list(dict.fromkeys(r["method"] for r in records))
    header = "| method | " + " | ".join(precisions) + " |"
    lines = [header, "|" + "---|" * (len(precisions) + 1)]
    for method in methods:
        cells = []
        for precision in precisions:
            r = by_key.get((method, "FP32")) or by_key.get((method, precision))  # FP32 rows fill every column
            cells.append(f"{100 * r['test_acc']:.2f} ({100 * r['val_acc']:.2f})" if r else "-")
        lines.append(f"| {METHOD_TITLES[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(records, config, output_dir):
    """results.json, results.md, accuracy.png and kurtosis.png in ``output_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    precisions = [precision_name(w, a) for w, a in config.precisions()]
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"config": config.to_dict(), "results": records}, f, indent=1)
    table = results_table(records, precisions)
    pruned = [f"\n## Sparsity of {r['stage']} (Prune)\n\n{r['sparsity_table']}\n"
              for r in records if "sparsity_table" in r]
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write("# paddle-kure run: Fashion-MNIST, exported models in paddle.inference\n\n"
                "Top-1 accuracy in %: test split (validation split in parentheses).\n\n" + table + "".join(pruned))

    methods = [m for m in dict.fromkeys(r["method"] for r in records) if not m.startswith("fp32")]
    by_key = {(r["method"], r["precision"]): r for r in records}
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [100 * by_key[(method, p)]["test_acc"] if (method, p) in by_key else np.nan for p in precisions]
        ax.bar(np.arange(len(precisions)) + i * width, values, width, label=METHOD_TITLES[method])
    for method, style in (("fp32", "--"), ("fp32_more", ":")):
        fp32 = 100 * by_key[(method, "FP32")]["test_acc"]
        ax.axhline(fp32, color="black", linestyle=style, label=f"{METHOD_TITLES[method]} {fp32:.2f}")
    ax.set_xticks(np.arange(len(precisions)) + 0.4 - width / 2, precisions)
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * r["test_acc"] for r in records if "test_acc" in r)
    ax.set_ylim(max(0, low - 5), 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, not over them
    ax.set_title("Exported models in paddle.inference")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "accuracy.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    shown = [r for r in records if "weight_kurtosis" in r and (r["method"] == "fp32" or r["precision"] == precisions[-1])]
    names = list(shown[0]["weight_kurtosis"])
    width = 0.8 / len(shown)
    for i, r in enumerate(shown):
        values = [r["weight_kurtosis"].get(n, np.nan) for n in names]
        label = METHOD_TITLES[r["method"]] + ("" if r["method"] == "fp32" else f" {r['precision']}")
        ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax.axhline(config.Kurtosis.target, color="black", linestyle=":", label=f"target {config.Kurtosis.target}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=8)
    ax.set_ylabel("weight kurtosis")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "kurtosis.png"), dpi=120)
    plt.close(fig)
    return table


def run_from_config(path=None, output_dir=None, resume=False, progress=True) -> str:
    """Runs the whole pipeline of the YAML config at ``path`` (default: the packaged
    one) into ``output_dir`` (default: its ``Global.output_dir``) and writes the
    outputs; returns the results table (markdown) on rank 0, None on other ranks."""
    import random

    import numpy as np
    import paddle

    from paddle_kure.apps.run_config import default_config_path, load_config

    path = path or default_config_path()
    config = load_config(path)
    output_dir = output_dir or config.Global.output_dir
    os.makedirs(output_dir, exist_ok=True)
    seed = config.Global.seed
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    start = time.time()
    run = RunPipeline(config, output_dir, resume, progress=progress)
    if run.rank == 0:
        with open(os.path.join(output_dir, "config_used.yaml"), "w") as f:
            f.write(f"# from {os.path.abspath(path)}\n{config}")
    run.log(f"config: {os.path.abspath(path)} (copy in config_used.yaml)")
    records = run.run()
    if run.rank != 0:
        return None
    table = write_outputs(records, config, output_dir)
    run.log(f"done in {time.time() - start:.0f} s; results in {output_dir}/results.md, results.json, "
            f"accuracy.png, kurtosis.png")
    return table
