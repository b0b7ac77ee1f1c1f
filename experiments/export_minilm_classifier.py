"""Exports the MiniLM sentence classifier that ``paddle-kure compress`` is tested on.

all-MiniLM-L6-v2 (pretrained, frozen) + mean pooling + a 2-class ``Linear`` head trained
on Rotten Tomatoes (split by movie, ``paddle_kure.data.text.load_rotten_tomatoes``):
the head is fitted on the pooled training embeddings (Adam, full batch), then the whole
classifier is saved as a legacy-Program inference model with inputs ``input_ids``,
``token_type_ids``, ``attention_mask`` of shape [batch, MAX_LENGTH]
(:func:`paddle_kure.quant.legacy.save_legacy_inference_model`).

Usage (several minutes on 2 cores: one forward pass over the training texts)::

    python experiments/export_minilm_classifier.py --output runs/minilm_classifier/fp32
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import paddle


def pooled_embeddings(bert, tokenizer, texts, batch_size=64):
    out = []
    with paddle.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = {k: paddle.to_tensor(v) for k, v in tokenizer(texts[start:start + batch_size]).items()}
            out.append(bert.sentence_embedding(**batch, normalize=False).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/minilm_classifier/fp32", help="path prefix of the inference model")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=0, help="training texts (0: all)")
    parser.add_argument("--val-size", type=int, default=0, help="validation texts measured (0: all)")
    parser.add_argument("--steps", type=int, default=300, help="full-batch Adam steps of the head")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from paddle_kure.data.text import load_rotten_tomatoes
    from paddle_kure.models import BertClassifier, load_minilm
    from paddle_kure.quant.legacy import save_legacy_inference_model
    from paddle_kure.train import evaluate, fit

    paddle.seed(args.seed)
    bert, tokenizer = load_minilm(max_length=args.max_length)
    splits = load_rotten_tomatoes(seed=args.seed)
    texts, labels = splits["train"]
    if args.train_size:
        texts, labels = texts[:args.train_size], labels[:args.train_size]
    start = time.time()
    features = pooled_embeddings(bert, tokenizer, texts)
    print(f"embedded {len(texts)} training texts in {time.time() - start:.0f} s", flush=True)
    model = BertClassifier(bert, num_classes=2)
    optimizer = paddle.optimizer.Adam(1e-2, parameters=model.classifier.parameters(), weight_decay=1e-4)
    # full-batch steps: each "epoch" of fit is one batch of all the features
    fit(model.classifier, optimizer, features, labels, args.steps, len(labels), seed=args.seed, progress=False)
    train_acc = evaluate(model.classifier, features, labels)
    val_texts, val_labels = splits["val"]
    if args.val_size:
        val_texts, val_labels = val_texts[:args.val_size], val_labels[:args.val_size]
    val_acc = evaluate(model.classifier, pooled_embeddings(bert, tokenizer, val_texts), val_labels)
    print(f"head: train accuracy {train_acc:.4f}, validation accuracy {val_acc:.4f} ({len(val_texts)} texts)")
    spec = [paddle.static.InputSpec([None, args.max_length], "int64", name)
            for name in ("input_ids", "token_type_ids", "attention_mask")]
    save_legacy_inference_model(model, args.output, spec)
    print(f"saved {args.output}.pdmodel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
