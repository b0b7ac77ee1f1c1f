"""The one training and evaluation loop of the package (``paddle-kure run``, the
transformer study, the experiments): seeded batch order or a batch iterator,
per-step and per-epoch hooks (pruning masks, quantizer switches), per-epoch
validation with selection of the best epoch, checkpoints after every epoch with
resume, and data parallelism (``paddle.DataParallel`` under
``python -m paddle.distributed.launch``)."""
from __future__ import annotations

import math
import os
import sys
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import paddle
import paddle.nn.functional as F

from .errors import DivergenceError
from .losses import ActivationKurtosis
from .runio import load_checkpoint, save_checkpoint, set_state_strictly

__all__ = ["ActivationKurtosis", "batch_order", "evaluate", "fit", "make_optimizer", "accuracy"]


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list:
    """Index arrays of the full batches of one epoch: a permutation seeded by
    ``(seed, epoch)``, so a resumed run sees the same order. The last incomplete
    batch is dropped (data-parallel processes need equal shares)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [order[i:i + batch_size] for i in range(0, num_examples - batch_size + 1, batch_size)]


def make_optimizer(name: str, learning_rate: float, parameters, weight_decay: float = 0.0):
    """'adam', 'momentum' (0.9) or 'sgd' with L2 ``weight_decay`` (parameters with
    their own regularizer, such as ``KurtosisDecay``, use that instead)."""
    decay = paddle.regularizer.L2Decay(weight_decay) if weight_decay else None
    if name == "adam":
        return paddle.optimizer.Adam(learning_rate, parameters=parameters, weight_decay=decay)
    if name == "momentum":
        return paddle.optimizer.Momentum(learning_rate, momentum=0.9, parameters=parameters, weight_decay=decay)
    if name == "sgd":
        return paddle.optimizer.SGD(learning_rate, parameters=parameters, weight_decay=decay)
    raise ValueError(f"make_optimizer: name must be one of ['adam', 'momentum', 'sgd'], got {name!r}")


def _world():
    return paddle.distributed.get_world_size(), paddle.distributed.get_rank()


def _parameter_names(model):
    """Generated parameter name (``linear_5.w_0``) -> structured name (``fc1.weight``)."""
    return {param.name: name for name, param in model.named_parameters()}


def _rename_state(state, names):
    """Optimizer state keys are ``<parameter name>_<accumulator>``; generated names
    depend on how many layers the process built before, so checkpoints store
    structured names."""
    prefixes = sorted(names, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        old = next((p for p in prefixes if key.startswith(p + "_")), None)
        renamed[names[old] + key[len(old):] if old else key] = value
    return renamed


def _save_checkpoint(directory, epoch, history, model, optimizer, stateful, fingerprint):
    objects = {"model.pdparams": model.state_dict(),
               "optimizer.pdopt": _rename_state(optimizer.state_dict(), _parameter_names(model))}
    objects.update({f"extra{i}.pdstate": obj.state_dict() for i, obj in enumerate(stateful)})
    save_checkpoint(directory, {"epochs_done": epoch + 1, "history": history, "fingerprint": fingerprint}, objects)


def _load_checkpoint(directory, model, optimizer, stateful, fingerprint):
    """``(epochs_done, history)`` of the newest good checkpoint, ``(0, [])`` without one;
    a damaged checkpoint is reported and the one before it (or the start) used."""
    def restore(objects):
        set_state_strictly(model, objects["model.pdparams"], os.path.join(directory, "model.pdparams"))
        to_generated = {structured: generated for generated, structured in _parameter_names(model).items()}
        optimizer.set_state_dict(_rename_state(objects["optimizer.pdopt"], to_generated))
        for i, obj in enumerate(stateful):
            obj.set_state_dict(objects[f"extra{i}.pdstate"])

    state, problems = load_checkpoint(directory, restore, fingerprint)
    for problem in problems:
        print(f"paddle-kure: warning: {problem}; "
              f"{'using the checkpoint of epoch %d' % state['epochs_done'] if state else 'training from the start'}",
              file=sys.stderr, flush=True)
    return (state["epochs_done"], state["history"]) if state else (0, [])


def _forward(model, inputs):
    """``model(inputs)``; a mapping of arrays or tensors is passed as keyword arguments."""
    if isinstance(inputs, dict):
        return model(**{key: paddle.to_tensor(value) for key, value in inputs.items()})
    return model(paddle.to_tensor(inputs))


def fit(model: paddle.nn.Layer, optimizer, images: Optional[np.ndarray], labels: Optional[np.ndarray], epochs: int,
        batch_size: int, seed: int = 0, extra_loss: Optional[Callable[[], paddle.Tensor]] = None,
        step_callbacks: Sequence[Callable[[int, float], None]] = (),
        epoch_callbacks: Sequence[Callable[[int], None]] = (), stateful: Sequence = (),
        checkpoint_dir: Optional[str] = None, resume: bool = False, progress: bool = True,
        desc: str = "train", batches: Optional[Callable[[int], Iterable]] = None,
        epoch_begin_callbacks: Sequence[Callable[[int], None]] = (),
        validate: Optional[Callable[[paddle.nn.Layer], float]] = None,
        select_best: Union[bool, Callable[[int], bool]] = False,
        log: Optional[Callable[[dict], None]] = None, fingerprint: Optional[dict] = None) -> list:
    """Trains ``model`` with softmax cross-entropy; returns one ``{"epoch", "loss"}`` per
    epoch (with ``"val_acc"`` under ``validate``, ``"selected"`` under ``select_best``).

    The one loop of the package: ``paddle-kure run``, the transformer study and the
    experiments train with it. An epoch is one pass of ``batches(epoch)``, or of the
    seeded full batches of ``images``/``labels``.

    Args:
        model (Layer): the model, or a ``paddle.DataParallel`` around it. With
            several processes each takes an equal slice of every global batch of
            ``batch_size`` (which they must divide), so the averaged gradient is the
            one-process gradient of the same global batch.
        optimizer: a Paddle optimizer over the model's parameters.
        images, labels (ndarray): the training data (all of it, in every process);
            None with ``batches``.
        epochs (int): epochs to train in total (counting those resumed).
        batch_size (int): global batch size (of the default batches).
        seed (int): seeds the batch order of each epoch and Paddle's generator (default
            batches; an iterator given as ``batches`` owns its order and randomness).
        extra_loss (callable): returns a term added to the loss after the forward
            pass (e.g. :meth:`ActivationKurtosis.loss`).
        step_callbacks: ``fn(global_step, loss)`` after every optimizer step (pruning
            masks, per-step records).
        epoch_callbacks: ``fn(epoch)`` after every epoch, before validation and the checkpoint.
        stateful: objects with ``state_dict``/``set_state_dict`` saved in checkpoints (a pruner).
        checkpoint_dir (str): save model, optimizer and ``stateful`` after every epoch
            (see :func:`paddle_kure.runio.save_checkpoint`).
        resume (bool): continue from the newest good checkpoint in ``checkpoint_dir``.
        progress (bool): a tqdm bar per epoch (rank 0 only).
        desc (str): names the training in the progress bar and in a DivergenceError.
        batches (callable): ``fn(epoch)`` -> iterable of ``(inputs, labels)`` (numpy
            arrays or tensors; ``inputs`` may be a dict of keyword arguments of the
            model), instead of the default batches.
        epoch_begin_callbacks: ``fn(epoch)`` before every epoch (switching quantizers on).
        validate (callable): ``fn(model) -> accuracy`` after every epoch, in eval mode
            (see :func:`evaluate`); recorded as ``"val_acc"``.
        select_best (bool | callable): at the end, restore the weights of the epoch
            with the best ``val_acc`` (the first of equals), among all epochs or those
            where ``select_best(epoch)`` is true.
        log (callable): ``fn(record)`` with each epoch's history record.
        fingerprint (dict): what the training depends on, stored in checkpoints; resuming
            a checkpoint with another fingerprint raises a UserError naming the keys.

    Raises:
        DivergenceError: a loss was NaN or infinite (before that step's update), or
            a weight after an update.

    Examples:
        .. code-block:: python

            >>> import numpy as np, paddle
            >>> from paddle_kure.train import fit, evaluate
            >>> model = paddle.nn.Linear(4, 3)
            >>> x, y = np.random.randn(64, 4).astype("float32"), np.random.randint(0, 3, 64)
            >>> opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
            >>> history = fit(model, opt, x, y, epochs=2, batch_size=16, progress=False,
            ...               validate=lambda m: evaluate(m, x, y), select_best=True)
    """
    from tqdm import tqdm

    world_size, rank = _world()
    if batches is None:
        _check_training_data(images, labels, batch_size, world_size)
    if select_best and validate is None:
        raise ValueError("fit: select_best needs validate")
    if select_best and checkpoint_dir:
        raise ValueError("fit: select_best does not combine with checkpoint_dir (checkpoints hold the last epoch)")
    selectable = select_best if callable(select_best) else (lambda epoch: True)
    inner = model._layers if isinstance(model, paddle.DataParallel) else model
    start_epoch, history, best = 0, [], None
    if resume and checkpoint_dir:
        start_epoch, history = _load_checkpoint(checkpoint_dir, inner, optimizer, stateful, fingerprint)
    named_parameters = list(inner.named_parameters())
    step = start_epoch * (len(labels) // batch_size) if batches is None else 0
    for epoch in range(start_epoch, epochs):
        for callback in epoch_begin_callbacks:
            callback(epoch)
        if batches is None:
            paddle.seed(seed * 1000 + epoch)
            share = batch_size // world_size
            epoch_batches = ((images[i[rank * share:(rank + 1) * share]], labels[i[rank * share:(rank + 1) * share]])
                             for i in batch_order(len(labels), batch_size, seed, epoch))
            total_batches = len(labels) // batch_size
        else:
            epoch_batches, total_batches = batches(epoch), None
        bar = tqdm(epoch_batches, total=total_batches, desc=f"{desc} epoch {epoch + 1}/{epochs}",
                   disable=not progress or rank != 0, leave=False, dynamic_ncols=True)
        model.train()
        total, count = 0.0, 0
        for inputs, targets in bar:
            loss = F.cross_entropy(_forward(model, inputs), paddle.to_tensor(targets))
            if extra_loss is not None:
                loss = loss + extra_loss()
            value = float(loss)
            # stop before the update spreads NaN into the weights (with several processes, after the
            # update instead: a process stopping alone would leave the others waiting for its gradients)
            if world_size == 1 and not math.isfinite(value):
                raise DivergenceError(desc, epoch + 1, step + 1, f"the loss ({value})")
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            step, loss = step + 1, value
            _check_weights(named_parameters, desc, epoch, step)
            for callback in step_callbacks:
                callback(step, loss)
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        if not count:
            raise ValueError(f"fit: epoch {epoch + 1} had no batch")
        record = {"epoch": epoch + 1, "loss": total / count}
        for callback in epoch_callbacks:
            callback(epoch)
        if validate is not None:
            record["val_acc"] = float(validate(model))
            if selectable(epoch) and (best is None or record["val_acc"] > best[0]["val_acc"]):
                best = (record, {key: value.numpy().copy() for key, value in inner.state_dict().items()})
        history.append(record)
        if log is not None:
            log(record)
        if checkpoint_dir and rank == 0:
            _save_checkpoint(checkpoint_dir, epoch, history, inner, optimizer, stateful, fingerprint)
    if select_best:
        if best is None:
            raise ValueError("fit: select_best found no selectable epoch")
        best[0]["selected"] = True
        inner.set_state_dict(best[1])
    return history


def _check_weights(named_parameters, desc, epoch, step):
    """A NaN weight can leave the loss finite (ReLU maps NaN to 0): raises a
    DivergenceError naming the first weight that is not finite."""
    finite = paddle.stack([paddle.isfinite(p).all() for _, p in named_parameters])
    if not bool(finite.all()):
        bad = [name for (name, _), ok in zip(named_parameters, finite.numpy()) if not ok]
        raise DivergenceError(desc, epoch + 1, step, f"the weight {bad[0]}" + (
            f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def _check_training_data(images, labels, batch_size, world_size):
    if images is None or labels is None:
        raise ValueError("fit: images and labels are needed without batches")
    if batch_size % world_size:
        raise ValueError(f"fit: batch_size {batch_size} must be divisible by the {world_size} processes")
    if len(images) != len(labels):
        raise ValueError(f"fit: {len(images)} images but {len(labels)} labels")
    if len(labels) < batch_size:
        raise ValueError(f"fit: batch_size {batch_size} exceeds the {len(labels)} training examples")


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, images: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
             batch_size: int = 1000, batches: Optional[Iterable] = None) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its train/eval mode is restored), on
    ``images``/``labels`` in batches of ``batch_size`` or on the ``(inputs, labels)``
    of ``batches`` (``inputs`` may be a dict of keyword arguments of the model)."""
    if batches is None:
        if images is None or labels is None:
            raise ValueError("evaluate: images and labels are needed without batches")
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    was_training = model.training
    model.eval()
    try:
        predictions, targets = [], []
        for inputs, batch_labels in batches:
            predictions.append(_forward(model, inputs).argmax(-1).numpy())
            targets.append(np.asarray(batch_labels))
    finally:
        if was_training:
            model.train()
    return accuracy(np.concatenate(predictions), np.concatenate(targets))


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions`` (class indices, or logits ``[N, C]``) equal to ``labels``."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    if predictions.shape != np.shape(labels):
        raise ValueError(f"accuracy: {predictions.shape[0]} predictions for {len(labels)} labels")
    return float((predictions == np.asarray(labels)).mean())
