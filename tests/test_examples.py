"""The README's main job, end to end at a tiny budget."""

import importlib.util
import pathlib

import keras
import matplotlib.image
import numpy as np

import keras_diffusion as kd
from conftest import pixel_features

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_mnist_writes_a_ten_row_grid_and_a_loadable_model(mnist_subset, tmp_path, capsys, monkeypatch):
    example = load_example("train_mnist")
    example.main(["--out", str(tmp_path), "--epochs", "1", "--limit", "64", "--steps", "2", "--eval-samples", "0"])
    grid = matplotlib.image.imread(tmp_path / "samples.png")
    tile = 28 + 2  # image plus padding
    assert grid.shape[:2] == (10 * tile + 2, 8 * tile + 2)
    assert (tmp_path / "grids" / "epoch_0001.png").exists() and (tmp_path / "curves.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "grids", "model.keras", "samples.png"]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(model, kd.DiffusionModel) and model.num_classes == 10
    assert np.all(np.isfinite(model.generate(2, steps=2, seed=0)))

    # The final evaluation (here with pixel features and a classifier that always answers 3).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # the real statistics' cache
    args = example.parse_args(["--eval-samples", "20", "--eval-steps", "2"])
    always_three = lambda images: np.eye(10, dtype="float32")[np.full(len(images), 3)]  # noqa: E731
    capsys.readouterr()
    results = example.evaluate(model, args, feature_extractor=pixel_features, classifier=always_three)
    assert results["class_accuracy"] == 2 / 20  # balanced labels 0..9, twice: two threes
    assert np.isfinite(results["fid"]) and results["fid"] >= 0
    assert "N = 20 generated vs 20 MNIST test digits" in capsys.readouterr().out
