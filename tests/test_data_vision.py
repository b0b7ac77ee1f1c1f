"""Fashion-MNIST loading: the IDX reader, the validation split, normalization, errors."""
import gzip
import struct

import numpy as np
import pytest

from paddle_kure.data import load_fashion_mnist, read_idx
from paddle_kure.data.vision import DEFAULT_DIR, MEAN, STD

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_read_idx_on_hand_written_files(tmp_path):
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 3, 4) + values.tobytes()
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(str(path)), values)
    ints = np.array([-5, 70000], dtype=">i4")
    plain = tmp_path / "b-idx1-ubyte"
    plain.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + ints.tobytes())
    assert read_idx(str(plain)).tolist() == [-5, 70000]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"abc")
    with pytest.raises(ValueError, match="shape"):
        read_idx(str(short))


@pytest.fixture(scope="module")
def splits():
    return load_fashion_mnist(val_size=5000, seed=3)


def test_splits_partition_the_train_split_and_match_paddles_reader(splits):
    from paddle.vision.datasets import FashionMNIST

    assert splits.train_images.shape == (55000, 1, 28, 28) and splits.train_images.dtype == np.float32
    assert len(splits.val_labels) == 5000 and len(splits.test_labels) == 10000
    assert splits.train_labels.dtype == np.int64
    # Fashion-MNIST is balanced: 6000 per class in train, 1000 in test.
    all_train = np.concatenate([splits.train_labels, splits.val_labels])
    assert np.bincount(all_train).tolist() == [6000] * 10
    assert np.bincount(splits.test_labels).tolist() == [1000] * 10
    # The normalization constants are the train split's own mean and std.
    pixels = np.concatenate([splits.train_images, splits.val_images])
    assert abs(pixels.mean()) < 2e-3 and abs(pixels.std() - 1) < 2e-3
    # Paddle's reader of the same file gives the same test images (ours are normalized).
    reference = FashionMNIST(image_path=f"{DEFAULT_DIR}/t10k-images-idx3-ubyte.gz",
                             label_path=f"{DEFAULT_DIR}/t10k-labels-idx1-ubyte.gz", mode="test",
                             download=False, backend="cv2")
    for i in (0, 1234, 9999):
        image, label = reference[i]
        np.testing.assert_allclose(splits.test_images[i, 0] * STD + MEAN,
                                   np.asarray(image, np.float32).reshape(28, 28) / 255.0, atol=1e-6)
        assert splits.test_labels[i] == int(np.asarray(label).reshape(-1)[0])


def test_validation_is_disjoint_and_seeded(splits):
    def keys(images):
        return {row.tobytes() for row in images.reshape(len(images), -1)[:, ::7]}

    assert not keys(splits.val_images) & keys(splits.train_images[:20000])
    same = load_fashion_mnist(val_size=5000, train_size=200, test_size=50, seed=3)
    np.testing.assert_array_equal(same.val_images, splits.val_images)
    np.testing.assert_array_equal(same.train_images, splits.train_images[:200])
    assert same.test_images.shape[0] == 50
    other = load_fashion_mnist(val_size=5000, train_size=200, test_size=50, seed=4)
    assert not np.array_equal(other.val_images, same.val_images)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(str(tmp_path))
    message = str(info.value)
    for word in ("train-images-idx3-ubyte.gz", "dataset-fashion-mnist", "make demo", "download"):
        assert word in message


def test_bad_sizes():
    with pytest.raises(ValueError, match="exceeds the 60000"):
        load_fashion_mnist(val_size=30000, train_size=40000)
    with pytest.raises(ValueError, match="val_size"):
        load_fashion_mnist(val_size=-1)
