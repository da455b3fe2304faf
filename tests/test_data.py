"""Datasets through torchvision's real loaders: Debian's Fashion-MNIST, a CIFAR-format fixture."""

import pytest
import torch

from ganlab.errors import DataNotFoundError
from ganlab.gan.data import TensorBatcher, load_images, torchvision_dataset


def test_fashion_mnist_from_debian_files(tmp_path):
    s = load_images("fashion-mnist", 32, train=False, data_dir=tmp_path)
    assert s.images.shape == (10_000, 1, 32, 32) and s.images.dtype == torch.uint8
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert sorted(s.labels.unique().tolist()) == list(range(10))
    assert 50 < float(s.images.float().mean()) < 100  # dark background, bright garments


def test_limit_is_a_fixed_subset_with_all_classes(tmp_path):
    a = load_images("fashion-mnist", 32, limit=300, data_dir=tmp_path)
    b = load_images("fashion-mnist", 32, limit=300, data_dir=tmp_path)
    assert len(a) == 300 and torch.equal(a.images, b.images)
    assert len(a.labels.unique()) == 10


def test_cifar_fixture_loads_through_the_cifar10_path(cifar_dir):
    ds = torchvision_dataset("cifar10", train=True, data_dir=cifar_dir)
    assert type(ds).__mro__[1].__name__ == "CIFAR10"
    s = load_images("cifar10", 64, data_dir=cifar_dir)
    assert s.images.shape == (100, 3, 64, 64)
    t = load_images("cifar10", 32, train=False, data_dir=cifar_dir)
    assert t.images.shape == (20, 3, 32, 32)
    # pixel layout: CIFAR rows are RRR..GGG..BBB; image 0's red plane must match the pickle
    import pickle

    with open(cifar_dir / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert torch.equal(t.images[0, 0].flatten(), torch.as_tensor(raw["data"][0][:1024]))


def test_missing_data_offline_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DataNotFoundError) as err:
        load_images("fashion-mnist", 32, data_dir=tmp_path / "empty")
    msg = str(err.value)
    assert "fashion-mnist not found" in msg and "nothing" in msg and "apt-get install" in msg
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_images("cifar10", 32, data_dir=tmp_path / "empty")


def test_batcher_order_depends_on_seed_and_epoch_only():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    a = TensorBatcher(images, 16, torch.device("cpu"), seed=3)
    b = TensorBatcher(images, 16, torch.device("cpu"), seed=3)
    ea, eb = list(a.epoch(2)), list(b.epoch(2))
    assert [x.shape[0] for x in ea] == [16, 16, 16, 2]
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    assert not torch.equal(torch.cat(list(a.epoch(1))), torch.cat(ea))
    assert torch.cat(ea).min() >= -1 and torch.cat(ea).max() <= 1


def test_a_planted_pickle_in_cifar_dir_is_refused_before_it_is_unpickled(cifar_dir, tmp_path):
    import pickle

    from ganlab.errors import DataError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (cifar_dir / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="data_batch_3 is not CIFAR-10's"):
        load_images("cifar10", 32, data_dir=cifar_dir)
    assert not marker.exists()


def test_a_truncated_idx_file_is_a_one_line_data_error(tmp_path, monkeypatch):
    from conftest import run_main

    load_images("fashion-mnist", 32, train=False, data_dir=tmp_path)  # unpacks the idx files here
    raw = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:100_000])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = run_main(["train", "--image-size", "32", "--data-dir", str(tmp_path), "--no-progress"])
    assert code == 2 and "corrupt or truncated" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()
