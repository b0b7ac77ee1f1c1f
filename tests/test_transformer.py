"""The transformer classifier, quantization patterns, latent switching, model size,
the tokenizer and the study's config and runner."""
import glob
import os

import numpy as np
import paddle
import pytest
from scipy.special import erf

from paddle_kure.data.tokenize import VocabTokenizer
from paddle_kure.models.transformer import TransformerClassifier, TransformerConfig, model_size_bits
from paddle_kure.nn.quantizers import (
    PATTERNS,
    IRNetBinarizer,
    QuantLinear,
    quantize_linears,
    set_quantization_enabled,
    update_ede,
)
from paddle_kure.apps import transformer_study as study

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
TINY = dict(vocab_size=10, num_classes=2, d_model=4, num_heads=2, d_ff=8, num_layers=1, max_len=5,
            classifier_hidden=4)


def _model(**overrides):
    return TransformerClassifier(TransformerConfig(**{**TINY, "dropout": 0.0, **overrides}))


# ---------------------------------------------------------------- model


def _numpy_forward(model, ids):
    p = {name: value.numpy().astype(np.float64) for name, value in model.state_dict().items()}
    heads, dim = model.config.num_heads, model.config.d_model // model.config.num_heads

    def norm(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * p[prefix + ".weight"] + p[prefix + ".bias"]

    def linear(x, prefix):
        return x @ p[prefix + ".weight"] + p[prefix + ".bias"]

    mask = ids != 0
    x = p["embedding.weight"][ids] + p["position.weight"][: ids.shape[1]]
    for i in range(model.config.num_layers):
        b = f"blocks.{i}"
        h = norm(x, f"{b}.attn_norm")
        q, k, v = (linear(h, f"{b}.attn.{n}_proj").reshape(*ids.shape, heads, dim).transpose(0, 2, 1, 3)
                   for n in "qkv")
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dim) + np.where(mask, 0.0, -1e9)[:, None, None, :]
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        context = (attn @ v).transpose(0, 2, 1, 3).reshape(*ids.shape, -1)
        x = x + linear(context, f"{b}.attn.out_proj")
        h = linear(norm(x, f"{b}.ffn_norm"), f"{b}.linear1")
        x = x + linear(0.5 * h * (1 + erf(h / np.sqrt(2))), f"{b}.linear2")
    x = norm(x, "final_norm")
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return linear(np.maximum(linear(pooled, "classifier"), 0), "final")


def test_forward_matches_numpy_reference_of_pre_ln_encoder():
    model = _model(num_layers=2)
    model.eval()
    ids = np.array([[3, 4, 5, 6, 0], [7, 2, 0, 0, 0]], dtype=np.int64)
    out = model(paddle.to_tensor(ids)).numpy()
    np.testing.assert_allclose(out, _numpy_forward(model, ids), rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_the_prediction():
    model = _model()
    model.eval()
    short = model(paddle.to_tensor([[3, 4, 5]])).numpy()
    padded = model(paddle.to_tensor([[3, 4, 5, 0, 0]])).numpy()
    np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-6)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TransformerConfig(vocab_size=10, num_classes=2, d_model=6, num_heads=4)
    with pytest.raises(ValueError, match="TransformerConfig.num_layers"):
        TransformerConfig(vocab_size=10, num_classes=2, num_layers=0)
    with pytest.raises(ValueError, match="exceeds max_len"):
        _model()(paddle.ones([1, 6], dtype="int64"))


def test_linear_groups_cover_every_linear_once():
    model = _model(num_layers=2)
    paths = [path for group in model.linear_groups().values() for path in group]
    linears = [name for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)]
    assert sorted(paths) == sorted(linears)


# ---------------------------------------------------------------- patterns


def _wrapped(model):
    return {name for name, layer in model.named_sublayers() if isinstance(layer, QuantLinear)}


@pytest.mark.parametrize("pattern, expected", [
    ("attention", {"blocks.0.attn.q_proj", "blocks.0.attn.k_proj", "blocks.0.attn.v_proj",
                   "blocks.0.attn.out_proj"}),
    ("ffn", {"blocks.0.linear1", "blocks.0.linear2"}),
    ("classifier", {"classifier"}),
    ("all_qk", {"blocks.0.attn.q_proj", "blocks.0.attn.k_proj", "blocks.0.linear1", "blocks.0.linear2",
                "classifier"}),
    ("all_qv", {"blocks.0.attn.q_proj", "blocks.0.attn.v_proj", "blocks.0.linear1", "blocks.0.linear2",
                "classifier"}),
    ("all_kv", {"blocks.0.attn.k_proj", "blocks.0.attn.v_proj", "blocks.0.linear1", "blocks.0.linear2",
                "classifier"}),
])
def test_pattern_wraps_exactly_its_linears_and_keeps_the_final_layer(pattern, expected):
    model = _model()
    quantize_linears(model, model.linear_groups(), pattern, "binary")
    assert _wrapped(model) == expected


def test_all_pattern_with_final_and_bad_pattern():
    model = _model()
    quantize_linears(model, model.linear_groups(), "all", "irnet", quantize_final=True)
    assert _wrapped(model) == {name for group in model.linear_groups().values() for name in group}
    with pytest.raises(ValueError, match="pattern must be one of"):
        quantize_linears(_model(), _model().linear_groups(), "qk", "binary")
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_linears(_model(), _model().linear_groups(), "all", "ternary")
    assert set(PATTERNS) == {"attention", "ffn", "classifier", "all", "all_qk", "all_qv", "all_kv"}


def test_binarized_model_uses_binary_weights_in_forward():
    model = _model()
    model.eval()
    ids = np.array([[3, 4, 5, 0]], dtype=np.int64)
    quantize_linears(model, model.linear_groups(), "ffn", "binary")
    reference = TransformerClassifier(model.config)
    reference.set_state_dict(model.state_dict())
    for layer in (reference.blocks[0].linear1, reference.blocks[0].linear2):
        w = layer.weight.numpy()
        layer.weight.set_value((np.abs(w).mean() * np.where(w >= 0, 1.0, -1.0)).astype("float32"))
    reference.eval()
    np.testing.assert_allclose(model(paddle.to_tensor(ids)).numpy(), _numpy_forward(reference, ids),
                               rtol=1e-4, atol=1e-5)


def test_latent_switch_and_pretrained_initialization_carry_the_weights():
    fp_model = _model()
    fp_model.eval()
    ids = paddle.to_tensor([[3, 4, 5, 6]])
    expected = fp_model(ids).numpy()

    quantized = _model()
    quantize_linears(quantized, quantized.linear_groups(), "all", "full", bits=4)
    missing, unexpected = quantized.set_state_dict(fp_model.state_dict())
    assert not unexpected and all("input_quantizer" in key for key in missing)
    quantized.eval()
    set_quantization_enabled(quantized, False)  # latent phase: exactly the full-precision model
    np.testing.assert_allclose(quantized(ids).numpy(), expected, rtol=1e-6)
    quantized.train()
    set_quantization_enabled(quantized, True)
    quantized(ids)  # a training batch sets the activation ranges
    quantized.eval()
    assert np.abs(quantized(ids).numpy() - expected).max() > 1e-4
    np.testing.assert_array_equal(quantized.blocks[0].linear1.weight.numpy(),
                                  fp_model.blocks[0].linear1.weight.numpy())


def test_update_ede_reaches_every_irnet_binarizer():
    model = _model()
    quantize_linears(model, model.linear_groups(), "all", "irnet")
    update_ede(model, 10, 10)
    binarizers = [layer for layer in model.sublayers() if isinstance(layer, IRNetBinarizer)]
    assert len(binarizers) == 7 and all(b.t == pytest.approx(10.0) and b.k == 1.0 for b in binarizers)


# ---------------------------------------------------------------- size


def test_model_size_counts_every_stored_value():
    model = _model()
    # FP32: embeddings 10*4 + 5*4; block: 2 LayerNorms 16, attention 4*(16+4), FFN 40+36;
    # final LayerNorm 8, classifier 20, final 10 -> 270 values
    assert model_size_bits(model) == 270 * 32
    assert model_size_bits(model, include_embedding=False) == 210 * 32
    quantize_linears(model, model.linear_groups(), "all", "binary")
    # binarized: weights 1 bit + one float32 scale, biases float32:
    # attention 4*(16+32+4*32), linear1 32+32+8*32, linear2 32+32+4*32, classifier 16+32+4*32
    quantized = 4 * 176 + 320 + 192 + 176
    unquantized = (60 + 24 + 10) * 32  # embeddings, LayerNorms, final layer
    assert model_size_bits(model) == quantized + unquantized
    assert model_size_bits(model, include_embedding=False) == quantized + unquantized - 60 * 32
    set_quantization_enabled(model, False)
    assert model_size_bits(model) == 270 * 32


# ---------------------------------------------------------------- tokenizer


def test_word_tokenizer_orders_by_frequency_and_maps_unknown_and_padding():
    tok = VocabTokenizer.build(["The film, the plot!", "the film"], level="word")
    assert tok.vocab == ["[PAD]", "[UNK]", "the", "film", ",", "plot", "!"]
    ids = tok.encode_batch(["THE plot twist", "film"], max_len=4)
    np.testing.assert_array_equal(ids, [[2, 5, 1, 0], [3, 0, 0, 0]])
    np.testing.assert_array_equal(tok.encode_batch(["the the the the the"], max_len=2), [[2, 2]])
    assert str(tok) == "VocabTokenizer(level='word', size=7)"


def test_tokenizer_min_freq_max_size_and_chinese_characters():
    tok = VocabTokenizer.build(["a a b b c", "a"], level="word", min_freq=2)
    assert tok.vocab[2:] == ["a", "b"]
    assert VocabTokenizer.build(["a a b b c"], max_size=1).vocab[2:] == ["a"]
    chars = VocabTokenizer.build(["很 好看", "不好"], level="char")
    assert chars.vocab[2:] == ["好", "很", "看", "不"]
    assert chars.encode("好不错") == [2, 5, 1]
    with pytest.raises(ValueError, match="level must be one of"):
        VocabTokenizer.build(["x"], level="bpe")
    with pytest.raises(TypeError, match="text must be a str"):
        chars.encode(3)


# ---------------------------------------------------------------- study config and runner


def _write(tmp_path, text):
    path = tmp_path / "transformer_test.yaml"
    path.write_text(text)
    return str(path)


def test_study_config_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, "epochs: 2\nlearnig_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"transformer_test.yaml.*learnig_rate"):
        study.load_study_config(path)
    path = _write(tmp_path, "variants:\n  - {name: A, method: fp32, bitz: 4}\n")
    with pytest.raises(ValueError, match=r"transformer_test.yaml: variants\[0\]: VariantConfig: unknown keys \['bitz'\]"):
        study.load_study_config(path)
    path = _write(tmp_path, "model: {d_model: 8, layers: 2}\n")
    with pytest.raises(ValueError, match=r"transformer_test.yaml: StudyConfig.model: unknown keys \['layers'\]"):
        study.load_study_config(path)


@pytest.mark.parametrize("variant, message", [
    ("{name: A, method: ternary}", "method must be one of"),
    ("{name: A, method: binary, pattern: qk}", "pattern must be one of"),
    ("{name: A, method: full, latent_epochs: 3}", "latent_epochs must be an int in"),
    ("{name: A, method: irnet, pretrained: true}", "fp32 variant listed first"),
    ("{name: A, method: fp32, latent_epochs: 1}", "need a quantizing method"),
])
def test_study_config_rejects_bad_variants(tmp_path, variant, message):
    path = _write(tmp_path, f"epochs: 3\nvariants:\n  - {variant}\n")
    with pytest.raises(ValueError, match=message):
        study.load_study_config(path)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "transformer_*.yaml"))))
def test_repository_study_configs_are_valid(path):
    config = study.load_study_config(path)
    assert len(config.seeds) >= 3 and config.variants[0].method == "fp32"


def _toy_splits(rng, n):
    """Sentiment decided by which of two marker words a text contains."""
    filler = ["plot", "actor", "scene", "music", "story", "film"]
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.rand() < 0.5)
        words = list(rng.choice(filler, 5)) + ["superb" if label else "dreadful"]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_study_runner_learns_selects_on_validation_and_writes_the_table(tmp_path):
    rng = np.random.RandomState(0)
    raw = {"train": _toy_splits(rng, 256), "val": _toy_splits(rng, 64), "test": _toy_splits(rng, 64)}
    config = study.StudyConfig.from_dict({
        "seeds": [0, 1], "epochs": 3, "batch_size": 32, "learning_rate": 0.01, "max_len": 8, "min_freq": 1,
        "model": {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_layers": 1, "classifier_hidden": 8},
        "variants": [{"name": "FP32", "method": "fp32"},
                     {"name": "IR-latent", "method": "irnet", "latent_epochs": 2},
                     {"name": "W4-pre", "method": "weight", "bits": 4, "pretrained": True}],
    })
    result = study.run_study(config, raw, log=lambda message: None)
    fp32, latent, pretrained = result["rows"]
    assert fp32["test_accuracy_mean"] > 0.9
    assert all(run["best_epoch"] == 3 for run in latent["runs"])  # full-precision epochs are not selectable
    assert pretrained["test_accuracy_mean"] > 0.9
    for row in result["rows"]:
        assert row["val_accuracy_mean"] == pytest.approx(np.mean([r["val_accuracy"] for r in row["runs"]]))
    assert fp32["size_ratio"] == 1.0 and latent["size_ratio_without_embedding"] < 0.5
    json_path, md_path = study.write_results(result, str(tmp_path / "out" / "study"))
    table = open(md_path, encoding="utf-8").read()
    assert "| IR-latent | IR-Net binarization, pattern all, latent 2 ep |" in table
    assert '"rows"' in open(json_path, encoding="utf-8").read()


def test_study_runner_latent_switch_ede_schedule_and_one_test_read(monkeypatch):
    """Latent 2 of 4 epochs: quantizers off, off, on, on on the same model (weights carried),
    EDE restarted at the switch; the test split is evaluated once, after selection."""
    from paddle_kure.nn import quantizers

    rng = np.random.RandomState(1)
    raw = {"train": _toy_splits(rng, 64), "val": _toy_splits(rng, 32), "test": _toy_splits(rng, 32)}
    config = study.StudyConfig.from_dict({
        "seeds": [0], "epochs": 4, "batch_size": 32, "max_len": 8, "min_freq": 1,
        "model": {"d_model": 8, "num_heads": 2, "d_ff": 16, "num_layers": 1, "classifier_hidden": 8},
        "variants": [{"name": "IR-latent", "method": "irnet", "latent_epochs": 2}],
    })
    data = study.encode_splits(config, raw)
    calls, models, evaluated = [], set(), []
    switch, ede, evaluate = quantizers.set_quantization_enabled, quantizers.update_ede, study.evaluate

    def record_switch(model, enabled):
        calls.append(("enabled", enabled))
        models.add(id(model))
        switch(model, enabled)

    def record_ede(model, epoch, epochs):
        calls.append(("ede", epoch, epochs))
        ede(model, epoch, epochs)

    def record_evaluate(model, ids, labels, batch_size=256):
        split = next(name for name, (split_ids, _) in data.splits.items() if split_ids is ids)
        evaluated.append(split)
        return evaluate(model, ids, labels, batch_size)

    monkeypatch.setattr(quantizers, "set_quantization_enabled", record_switch)
    monkeypatch.setattr(quantizers, "update_ede", record_ede)
    monkeypatch.setattr(study, "evaluate", record_evaluate)
    result, _ = study.train_variant(config, config.variants[0], data, seed=0, log=lambda message: None)
    assert calls == [("enabled", False), ("enabled", False), ("enabled", True), ("ede", 0, 2),
                     ("enabled", True), ("ede", 1, 2)]
    assert len(models) == 1  # one model throughout: the quantized epochs continue the latent weights
    assert evaluated == ["val"] * 4 + ["test"]
    assert result["best_epoch"] in (3, 4)


def test_train_limit_draws_a_random_subset_not_the_first_examples():
    # a loader may list the examples grouped by label: the first N would all be positive
    texts = [f"good {i}" for i in range(50)] + [f"bad {i}" for i in range(50)]
    raw = {"train": (texts, [1] * 50 + [0] * 50), "val": (["good", "bad"], [1, 0]), "test": (["bad"], [0])}
    config = study.StudyConfig.from_dict({"train_limit": 40, "min_freq": 1})
    ids, labels = study.encode_splits(config, raw).splits["train"]
    assert len(labels) == 40 and 10 < labels.sum() < 30
    again = study.encode_splits(config, raw).splits["train"]
    np.testing.assert_array_equal(again[0], ids)
