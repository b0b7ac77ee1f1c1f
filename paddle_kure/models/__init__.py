"""Models (see README.md)."""
from .bert import BertClassifier, BertConfig, BertModel
from .cnn import SmallCNN
from .minilm import BertTokenizer, encode, load_minilm, minilm_dir

__all__ = ["BertClassifier", "BertConfig", "BertModel", "BertTokenizer", "SmallCNN", "encode", "load_minilm",
           "minilm_dir"]
