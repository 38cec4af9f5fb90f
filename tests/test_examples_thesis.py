"""The thesis' applications (examples/mnist_conditional.py, examples/cifar10_ddpm.py) end to end, tiny.

Both run their `--quick` configuration with sizes cut further and with the
raw pixels as FID features instead of Inception (tested elsewhere). CIFAR-10
is not available offline here, so the CIFAR example reads tensorflow-datasets'
mock data (random 32x32x3 images and labels, `tfds.testing.mock_data`) through
the library's real loader; users get the real dataset from the same code.
"""

import importlib.util
import json
import pathlib
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import strided_pixel_features

import keras_diffusion as kd

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def always_zero(images):
    """A digit 'classifier' that answers 0 for every image."""
    return np.tile(np.eye(10, dtype="float32")[:1], (len(images), 1))


def test_mnist_conditional_quick_run_writes_grids_curves_the_guidance_sweep_and_the_model(mnist_subset, tmp_path):
    example = load_example("mnist_conditional")
    # 40 FID samples: the grid's batch shape, so all reuse one compiled sampling step.
    argv = ["--quick", "--out", tmp_path, "--limit", 64, "--epochs", 1, "--widths", "8,16", "--steps", 2,
            "--fid-samples", 40, "--fid-real", 40, "--final-fid-samples", 40, "--sweep-samples", 40]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # FID from few samples warns
        example.main([str(arg) for arg in argv], feature_extractor=strided_pixel_features, classifier=always_zero)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "curves.png", "grids", "guidance_sweep.png", "history.json", "model.keras", "results.json",
    ]  # fmt: skip
    grid = matplotlib.image.imread(tmp_path / "grids" / "epoch_0001.png")
    tile = 28 + 2
    assert grid.shape[:2] == (2 * (4 * tile + 2) + 4, 10 * tile + 2)  # 4 rows of digits 0-9 over 4 real rows
    sweep = matplotlib.image.imread(tmp_path / "guidance_sweep.png")
    assert sweep.shape[1] > 2 * sweep.shape[0]  # three panels side by side
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == 1 and history["fid"][0] >= 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [entry["guidance_scale"] for entry in results["sweep"]] == [0.0, 0.5, 2.0]
    # Balanced labels: a classifier that always answers 0 is right for exactly a tenth of the digits.
    assert all(entry["class_accuracy"] == 0.1 and entry["fid"] >= 0 for entry in results["sweep"])
    # The final FID at w = 0 and the sweep's w = 0 see the same seed, labels and N: the same value.
    assert results["final"]["fid"] == results["sweep"][0]["fid"] == results["curve"][-1]["fid"]
    assert results["updates"] == 1 and results["curve"][-1]["updates"] == 1
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.timesteps == 400 and model.num_classes == 10  # the thesis' T and the ten digits


def test_mnist_grid_layout_has_one_digit_per_column():
    example = load_example("mnist_conditional")
    assert example.digit_columns(2).tolist() == list(range(10)) * 2
    images = np.arange(40, dtype="float32").reshape(40, 1, 1, 1) / 40
    labels = np.tile(np.arange(10), 4)
    layout = example.real_digit_columns(images, labels, rows=2)
    assert np.array_equal(labels[np.round(layout[:, 0, 0, 0] * 40).astype(int)], example.digit_columns(2))


def test_mnist_full_settings_are_the_thesis_ones():
    example = load_example("mnist_conditional")
    args = example.parse_args([])
    assert (args.epochs, args.batch_size, args.learning_rate, args.timesteps) == (20, 256, 1e-4, 400)
    assert args.guidance_weights == [0.0, 0.5, 2.0] and args.class_dropout == 0.1 and args.limit == 0
    assert (args.schedule, args.lr_schedule, args.sampler, args.steps) == ("linear", "linear", "ddpm", 400)
    cpu = example.parse_args(["--preset", "cpu", "--epochs", "3"])
    assert (cpu.epochs, cpu.batch_size, cpu.timesteps, cpu.final_fid_samples) == (3, 64, 1000, 10000)
    # The library's measured recipe (docs/lab_notes.md) and its default sampler.
    assert (cpu.schedule, cpu.lr_schedule, cpu.learning_rate) == ("cosine", "warmup_cosine", 2e-3)
    assert (cpu.sampler, cpu.steps) == (kd.samplers.RECOMMENDED, 10)


def test_mnist_conditional_refuses_a_final_fid_larger_than_its_real_set(capsys):
    with pytest.raises(SystemExit):
        load_example("mnist_conditional").parse_args(["--final-fid-samples", "20000"])
    assert "--fid-real 10000" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """The CIFAR example's quick run on tfds mock data; (module, output folder, trained model)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    example = load_example("cifar10_ddpm")
    out = tmp_path_factory.mktemp("cifar10_ddpm")
    # 32 FID samples: the grid's batch shape, so both reuse one compiled sampling step.
    argv = ["--quick", "--out", out, "--limit", 32, "--epochs", 1, "--steps", 2, "--sequence-steps", 6,
            "--snapshots", 3, "--sequence-rows", 2, "--fid-samples", 32, "--fid-real", 16]  # fmt: skip
    with tfds.testing.mock_data(num_examples=64), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = example.main([str(arg) for arg in argv], feature_extractor=strided_pixel_features)
    return example, out, model


def test_cifar10_quick_run_writes_grids_curves_the_denoising_sequence_and_the_model(cifar_run):
    _, out, _ = cifar_run
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png", "denoising_airplane.png", "grids", "history.json", "model.keras",
    ]  # fmt: skip
    tile = 32 + 2
    grid = matplotlib.image.imread(out / "grids" / "epoch_0001.png")
    assert grid.shape[:2] == (2 * (4 * tile + 2) + 4, 8 * tile + 2)
    figure = matplotlib.image.imread(out / "denoising_airplane.png")
    assert figure.shape[1] > figure.shape[0]  # 3 snapshots of 2 airplanes: wider than tall
    assert json.loads((out / "history.json").read_text())["fid"][0] >= 0
    loaded = keras.models.load_model(out / "model.keras")
    assert loaded.image_shape == (32, 32, 3) and loaded.num_classes == 10 and loaded.timesteps == 1000


def test_denoising_sequence_runs_from_the_noisiest_level_to_the_sample_generate_returns(cifar_run):
    example, _, model = cifar_run
    frames, names = example.denoising_sequence(model, 2, steps=6, snapshots=3, label=0, guidance_scale=0.0, seed=3)
    assert frames.shape == (3, 2, 32, 32, 3) and names[0] == f"x_{kd.schedules.timestep_sequence(model.timesteps, 6)[0]}"
    assert names[-1] == "x_0"
    final = model.generate(2, sampler="ddpm", steps=6, labels=[0, 0], seed=3)
    np.testing.assert_allclose(frames[-1], final, atol=1e-6)
    # The first snapshot is still mostly noise: far from the sample, with a wider spread of values.
    assert np.abs(frames[0] - frames[-1]).mean() > 0.05


def test_cifar10_full_settings_are_the_thesis_ones():
    args = load_example("cifar10_ddpm").parse_args([])
    assert (args.epochs, args.batch_size, args.learning_rate, args.timesteps) == (100, 64, 2e-5, 1000)
    assert args.preset == "thesis" and args.sequence_steps == 1000


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """The latent example's quick run (autoencoder, latent and pixel models); (output folder, results)."""
    out = tmp_path_factory.mktemp("latent_mnist")
    results = load_example("latent_mnist").main(["--quick", "--out", str(out), "--limit", "64", "--timing-rounds", "0"])
    return out, results


def test_latent_mnist_quick_run_writes_its_models_grids_and_results(latent_run):
    tmp_path, results = latent_run
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "autoencoder.keras", "latent_model.keras", "pixel_model.keras", "reconstructions.png", "results.json",
        "samples_latent.png", "samples_pixel.png",
    ]  # fmt: skip
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["latent"]["scale_factor"] == pytest.approx(results["latent"]["scale_factor"])
    assert written["autoencoder"]["test_psnr_db"] == pytest.approx(results["autoencoder"]["test_psnr_db"])
    assert np.isfinite(results["autoencoder"]["test_psnr_db"]) and results["autoencoder"]["test_psnr_db"] > 0
    latent = keras.models.load_model(tmp_path / "latent_model.keras")
    assert latent.scale_factor == pytest.approx(results["latent"]["scale_factor"]) and latent.scale_factor > 0
    assert results["latent"]["train_img_per_s"] > 0 and results["pixel"]["train_img_per_s"] > 0


@pytest.fixture(scope="module")
def sampler_comparison(tmp_path_factory):
    """The sampler comparison's quick run (trains a tiny model); (module, output folder, points)."""
    example = load_example("sampler_comparison")
    out = tmp_path_factory.mktemp("sampler_comparison")
    argv = ["--quick", "--out", out, "--limit", 64, "--samplers", "ddim,heun", "--steps", "2,3", "--num-samples", 16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        points = example.main([str(arg) for arg in argv], feature_extractor=strided_pixel_features)
    return example, out, points


def test_sampler_comparison_quick_run_writes_the_figure_the_table_the_samples_and_the_model(sampler_comparison):
    _, out, points = sampler_comparison
    assert sorted(p.name for p in out.iterdir()) == ["fid_vs_nfe.csv", "fid_vs_nfe.png", "model.keras", "samples.png"]
    assert [(p.sampler, p.steps, p.nfe) for p in points] == [("ddim", 2, 2), ("ddim", 3, 3), ("heun", 2, 3), ("heun", 3, 5)]
    assert kd.metrics.read_sweep(out / "fid_vs_nfe.png") == points
    samples = matplotlib.image.imread(out / "samples.png")
    tile = 28 + 2
    assert samples.shape[:2] == (2 * tile + 2, 10 * tile + 2)  # a row of digits 0-9 per sampler


def test_latent_mnist_against_a_saved_conditional_pixel_model(latent_run, sampler_comparison, tmp_path):
    """--pixel-model / --autoencoder: both are loaded, not trained, and the latent model takes the classes."""
    _, out, _ = sampler_comparison
    autoencoder = latent_run[0] / "autoencoder.keras"
    example = load_example("latent_mnist")
    argv = ["--quick", "--out", tmp_path, "--limit", 64, "--pixel-model", out / "model.keras", "--sampler", "euler",
            "--autoencoder", autoencoder, "--timing-rounds", 1]  # fmt: skip
    results = example.main([str(arg) for arg in argv])
    assert "pixel_model.keras" not in {p.name for p in tmp_path.iterdir()}
    # The loaded autoencoder reconstructs exactly as the one that was trained and saved.
    assert results["autoencoder"]["test_psnr_db"] == pytest.approx(latent_run[1]["autoencoder"]["test_psnr_db"], rel=1e-5)
    assert "epochs" not in results["autoencoder"]  # not trained again
    assert results["pixel"]["loaded"] == str(out / "model.keras") and results["num_classes"] == 10
    assert results["sampler"] == "euler"
    latent = keras.models.load_model(tmp_path / "latent_model.keras")
    assert latent.num_classes == 10
    interleaved = results["interleaved"]
    assert interleaved["training_speedup"] == pytest.approx(
        interleaved["latent_train_img_per_s"] / interleaved["pixel_train_img_per_s"]
    )


def test_latent_mnist_rejects_a_missing_pixel_model(tmp_path):
    with pytest.raises(SystemExit):
        load_example("latent_mnist").parse_args(["--pixel-model", str(tmp_path / "none.keras")])


def test_sampler_comparison_of_a_saved_model_reproduces_the_trained_run(sampler_comparison, tmp_path):
    example, out, points = sampler_comparison
    argv = ["--model", out / "model.keras", "--out", tmp_path, "--samplers", "heun", "--steps", 3, "--num-samples", 16,
            "--grid-steps", 2]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again = example.main([str(arg) for arg in argv], feature_extractor=strided_pixel_features)
    assert again[0].nfe == points[3].nfe and again[0].fid == pytest.approx(points[3].fid, rel=1e-5)
    assert not (tmp_path / "model.keras").exists()  # a given model is not re-saved


def test_sampler_comparison_rejects_bad_arguments_before_any_work(capsys):
    example = load_example("sampler_comparison")
    for argv, message in [(["--samplers", "ddim,nope"], "unknown sampler"), (["--steps", "2,x"], "comma-separated"),
                          (["--model", "missing.keras"], "is not a file")]:  # fmt: skip
        with pytest.raises(SystemExit) as error:
            example.parse_args(argv)
        assert error.value.code == 2 and message in capsys.readouterr().err
