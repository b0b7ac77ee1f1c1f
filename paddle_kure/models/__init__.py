"""Models (see README.md)."""
from .bert import BertClassifier, BertConfig, BertModel, BertTokenizer, encode, load_minilm, minilm_dir
from .cnn import SmallCNN

__all__ = ["BertClassifier", "BertConfig", "BertModel", "BertTokenizer", "SmallCNN", "encode", "load_minilm",
           "minilm_dir"]
