"""The training and evaluation loop behind ``paddle-kure run``: seeded batch
order, per-step and per-epoch callbacks (pruning masks), checkpoints after every
epoch with resume, and data parallelism (``paddle.DataParallel``
under ``python -m paddle.distributed.launch``)."""
from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from .losses import ActivationKurtosis

__all__ = ["ActivationKurtosis", "batch_order", "evaluate", "fit", "make_optimizer", "accuracy"]

CHECKPOINT_STATE = "state.json"


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


def _save_checkpoint(directory, epoch, history, model, optimizer, stateful):
    os.makedirs(directory, exist_ok=True)
    paddle.save(model.state_dict(), os.path.join(directory, "model.pdparams"))
    paddle.save(_rename_state(optimizer.state_dict(), _parameter_names(model)), os.path.join(directory, "optimizer.pdopt"))
    for i, obj in enumerate(stateful):
        paddle.save(obj.state_dict(), os.path.join(directory, f"extra{i}.pdstate"))
    # written last: a checkpoint counts only once its state file says so
    tmp = os.path.join(directory, CHECKPOINT_STATE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"epochs_done": epoch + 1, "history": history}, f)
    os.replace(tmp, os.path.join(directory, CHECKPOINT_STATE))


def _load_checkpoint(directory, model, optimizer, stateful):
    with open(os.path.join(directory, CHECKPOINT_STATE)) as f:
        state = json.load(f)
    model.set_state_dict(paddle.load(os.path.join(directory, "model.pdparams")))
    to_generated = {structured: generated for generated, structured in _parameter_names(model).items()}
    optimizer.set_state_dict(_rename_state(paddle.load(os.path.join(directory, "optimizer.pdopt")), to_generated))
    for i, obj in enumerate(stateful):
        obj.set_state_dict(paddle.load(os.path.join(directory, f"extra{i}.pdstate")))
    return state["epochs_done"], state["history"]


def fit(model: paddle.nn.Layer, optimizer, images: np.ndarray, labels: np.ndarray, epochs: int,
        batch_size: int, seed: int = 0, extra_loss: Optional[Callable[[], paddle.Tensor]] = None,
        step_callbacks: Sequence[Callable[[int], None]] = (),
        epoch_callbacks: Sequence[Callable[[int], None]] = (), stateful: Sequence = (),
        checkpoint_dir: Optional[str] = None, resume: bool = False, progress: bool = True,
        desc: str = "train") -> list:
    """Trains ``model`` with softmax cross-entropy; returns one ``{"epoch", "loss"}`` per epoch.

    Args:
        model (Layer): the model, or a ``paddle.DataParallel`` around it. With
            several processes each takes an equal slice of every global batch of
            ``batch_size`` (which they must divide), so the averaged gradient is the
            one-process gradient of the same global batch.
        optimizer: a Paddle optimizer over the model's parameters.
        images, labels (ndarray): the training data (all of it, in every process).
        epochs (int): epochs to train in total (counting those resumed).
        batch_size (int): global batch size.
        seed (int): seeds the batch order of each epoch and Paddle's generator.
        extra_loss (callable): returns a term added to the loss after the forward
            pass (e.g. :meth:`ActivationKurtosis.loss`).
        step_callbacks: ``fn(global_step)`` after every optimizer step (pruning masks).
        epoch_callbacks: ``fn(epoch)`` after every epoch, before the checkpoint.
        stateful: objects with ``state_dict``/``set_state_dict`` saved in checkpoints (a pruner).
        checkpoint_dir (str): save model, optimizer and ``stateful`` after every epoch.
        resume (bool): continue from ``checkpoint_dir`` if it holds a checkpoint.
        progress (bool): a tqdm bar per epoch (rank 0 only).

    Examples:
        .. code-block:: python

            >>> import numpy as np, paddle
            >>> from paddle_kure.train import fit, evaluate
            >>> model = paddle.nn.Linear(4, 3)
            >>> x, y = np.random.randn(64, 4).astype("float32"), np.random.randint(0, 3, 64)
            >>> opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
            >>> history = fit(model, opt, x, y, epochs=2, batch_size=16, progress=False)
            >>> acc = evaluate(model, x, y)
    """
    from tqdm import tqdm

    world_size, rank = _world()
    if batch_size % world_size:
        raise ValueError(f"fit: batch_size {batch_size} must be divisible by the {world_size} processes")
    if len(images) != len(labels):
        raise ValueError(f"fit: {len(images)} images but {len(labels)} labels")
    if len(labels) < batch_size:
        raise ValueError(f"fit: batch_size {batch_size} exceeds the {len(labels)} training examples")
    share = batch_size // world_size
    inner = model._layers if isinstance(model, paddle.DataParallel) else model
    start_epoch, history = 0, []
    if resume and checkpoint_dir and os.path.isfile(os.path.join(checkpoint_dir, CHECKPOINT_STATE)):
        start_epoch, history = _load_checkpoint(checkpoint_dir, inner, optimizer, stateful)
    batches = len(labels) // batch_size
    step = start_epoch * batches
    model.train()
    for epoch in range(start_epoch, epochs):
        paddle.seed(seed * 1000 + epoch)
        total, count = 0.0, 0
        bar = tqdm(batch_order(len(labels), batch_size, seed, epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}",
                   disable=not progress or rank != 0, leave=False, dynamic_ncols=True)
        for index in bar:
            local = index[rank * share:(rank + 1) * share]
            logits = model(paddle.to_tensor(images[local]))
            loss = F.cross_entropy(logits, paddle.to_tensor(labels[local]))
            if extra_loss is not None:
                loss = loss + extra_loss()
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            step += 1
            for callback in step_callbacks:
                callback(step)
            total, count = total + float(loss), count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.append({"epoch": epoch + 1, "loss": total / count})
        for callback in epoch_callbacks:
            callback(epoch)
        if checkpoint_dir and rank == 0:
            _save_checkpoint(checkpoint_dir, epoch, history, inner, optimizer, stateful)
    return history


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        predictions = [model(paddle.to_tensor(images[i:i + batch_size])).argmax(-1).numpy()
                       for i in range(0, len(images), batch_size)]
    finally:
        if was_training:
            model.train()
    return accuracy(np.concatenate(predictions), labels)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions`` (class indices, or logits ``[N, C]``) equal to ``labels``."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    if predictions.shape != np.shape(labels):
        raise ValueError(f"accuracy: {predictions.shape[0]} predictions for {len(labels)} labels")
    return float((predictions == np.asarray(labels)).mean())
