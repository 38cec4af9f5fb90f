"""The `keras-diffusion` command line, in-process through `cli.main` (one tiny trained model shared).

FID here uses the raw pixels as features instead of the Inception network
(`cli.common.make_feature_extractor` is replaced), which keeps the tests fast; the
Inception port itself is tested in test_inception.py.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import strided_pixel_features

import keras_diffusion as kd
from keras_diffusion import cli

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
TILE = 28 + 2  # an MNIST digit plus the grid padding


def run(argv, capsys):
    """`cli.main(argv)` with its exit status, stdout and stderr."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_subset):
    """`keras-diffusion train` on 64 MNIST digits for one epoch with FID; its output folder."""
    out = tmp_path_factory.mktemp("cli_train")
    # 32 FID samples: the grid's batch shape (4 rows of 8), so both reuse one compiled sampling step.
    argv = [
        "train", "mnist", "--out", out, "--limit", 64, "--epochs", 1, "--batch-size", 32, "--widths", "8,16",
        "--timesteps", 100, "--steps", 2, "--fid-every", 1, "--fid-samples", 32, "--fid-real", 16, "--quiet",
        "--prediction", "x0", "--timestep-sampling", "log_normal",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # FID from 32 samples warns
        patch.setattr(cli.common, "make_feature_extractor", lambda batch_size: strided_pixel_features)
        patch.setenv("KERAS_HOME", str(out / "keras_home"))
        assert cli.main([str(arg) for arg in argv]) == 0
    return out


@pytest.fixture
def model_path(trained_run):
    return str(trained_run / "model.keras")


@pytest.fixture
def pixel_fid(monkeypatch, tmp_path):
    monkeypatch.setattr(cli.common, "make_feature_extractor", lambda batch_size: strided_pixel_features)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


EXPECTED_OPTIONS = {
    "train": [
        "DATA", "--out", "--preset", "--widths", "--epochs", "--batch-size", "--learning-rate", "--lr-schedule",
        "--timesteps", "--schedule", "--ema-decay", "--class-dropout", "--unconditional", "--split", "--limit", "--data-dir",
        "--image-size", "--grayscale", "--sampler", "--steps", "--eta", "--guidance-scale", "--grid-every",
        "--fid-every", "--fid-samples", "--fid-real", "--keep-checkpoints", "--seed", "--quiet", "--coordinator",
        "--num-processes", "--process-id", "KERAS_BACKEND",
    ],
    "sample": [
        "MODEL", "--num", "--sampler", "--steps", "--eta", "--guidance-scale", "--labels", "--seed", "--batch-size",
        "--columns", "--raw-weights", "--out", "--npz", "--quiet", "KERAS_BACKEND",
    ],
    "evaluate": [
        "--model", "--images", "--dataset", "--split", "--num", "--num-real", "--kid", "--data-dir", "--sampler",
        "--steps", "--eta", "--guidance-scale", "--labels", "--seed", "--batch-size", "--out", "--quiet",
        "KERAS_BACKEND",
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(EXPECTED_OPTIONS))
def test_help_of_each_command_mentions_every_option_and_exits_0(command, capsys):
    status, out, _ = run([command, "--help"], capsys)
    assert status == 0
    missing = [option for option in EXPECTED_OPTIONS[command] if option not in out]
    assert not missing, f"`{command} --help` does not mention {missing}"


def test_top_level_help_lists_the_commands_and_no_command_is_a_usage_error(capsys):
    status, out, _ = run(["--help"], capsys)
    assert status == 0 and all(command in out for command in EXPECTED_OPTIONS)
    status, _, err = run([], capsys)
    assert status == 2 and "train" in err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--num-processes", "2", "--process-id", "0"], "need --coordinator"),
        (["--coordinator", "node0", "--process-id", "0"], "not 'host:port'"),
        (["--coordinator", "a:1,b:2", "--process-id", "2"], "must be in 0..1"),
    ],
)
def test_train_refuses_a_bad_multi_process_setup_before_loading_anything(options, message, capsys, tmp_path):
    status, _, err = run(["train", "mnist", "--out", tmp_path / "out", *options], capsys)
    assert status == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_sampler_choices_are_read_from_the_samplers_module(capsys):
    names = cli.available_samplers()
    assert "ddim" in names and "ddpm" in names and set(names) <= set(kd.samplers.SAMPLERS)
    _, out, _ = run(["sample", "--help"], capsys)
    assert all(name in out for name in names)


def test_train_writes_grids_curves_checkpoints_history_and_a_loadable_model(trained_run):
    assert sorted(p.name for p in trained_run.iterdir() if p.name != "keras_home") == [
        "checkpoints", "curves.png", "grids", "history.json", "model.keras",
    ]  # fmt: skip
    assert [p.name for p in (trained_run / "checkpoints").iterdir()] == ["epoch_0001.keras"]
    grid = matplotlib.image.imread(trained_run / "grids" / "epoch_0001.png")
    assert grid.shape[:2] == (2 * (4 * TILE + 2) + 4, 8 * TILE + 2)  # 4 generated rows, a band, 4 real rows
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history["loss"]) == 1 and len(history["fid"]) == 1 and history["fid"][0] >= 0
    model = keras.models.load_model(trained_run / "model.keras")
    assert isinstance(model, kd.DiffusionModel) and model.num_classes == 10 and model.timesteps == 100
    assert model.prediction == "x0"  # --prediction reaches the model
    assert isinstance(model.timestep_sampling, kd.timestep_sampling.LogNormalTimesteps)  # so does --timestep-sampling


@pytest.fixture(scope="session")
def sampled(trained_run, tmp_path_factory):
    """`keras-diffusion sample` of 6 images of classes 1, 2, 3 with guidance; (status, output folder)."""
    out = tmp_path_factory.mktemp("cli_sample")
    argv = ["sample", trained_run / "model.keras", "--num", 6, "--labels", "1,2,3", "--sampler", "ddpm", "--steps", 2,
            "--guidance-scale", 2, "--out", out / "s.png", "--quiet"]  # fmt: skip
    status = cli.main([str(arg) for arg in argv])
    return status, out


def test_sample_writes_a_png_grid_with_a_row_per_label_and_an_npz_of_n_images_in_the_unit_range(sampled):
    status, out = sampled
    assert status == 0 and sorted(p.name for p in out.iterdir()) == ["s.npz", "s.png"]
    grid = matplotlib.image.imread(out / "s.png")
    assert grid.shape[:2] == (3 * TILE + 2, 2 * TILE + 2)  # one row per label, 6 / 3 = 2 per row
    with np.load(out / "s.npz") as data:
        images, labels = data["images"], data["labels"]
        assert str(data["sampler"]) == "ddpm" and int(data["steps"]) == 2 and float(data["guidance_scale"]) == 2.0
    assert images.shape == (6, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and labels.tolist() == [1, 1, 2, 2, 3, 3]


def test_sample_takes_the_shipped_model_by_name(tmp_path, capsys):
    status, out, err = run(["sample", "mnist", "--labels", 3, "--num", 2, "--steps", 3, "--out", tmp_path / "t.png",
                            "--quiet"], capsys)  # fmt: skip
    assert status == 0, err
    with np.load(tmp_path / "t.npz") as data:
        assert data["images"].shape == (2, 28, 28, 1) and data["labels"].tolist() == [3, 3]
    status, _, err = run(["sample", "mnits", "--out", tmp_path / "u.png"], capsys)
    assert status == 1 and "shipped models: mnist" in err


def test_sample_output_round_trips_into_evaluate(sampled, capsys, pixel_fid):
    status, out, _ = run(["evaluate", "--images", sampled[1] / "s.npz", "--dataset", "mnist", "--num-real", 8], capsys)
    assert status == 0 and "6 generated vs 8 real images, mnist test" in out


def test_evaluate_a_model_states_both_sample_sizes_and_writes_json(model_path, tmp_path, capsys, pixel_fid):
    argv = ["evaluate", "--model", model_path, "--num", 8, "--num-real", 16, "--steps", 2, "--kid",
            "--out", tmp_path / "r.json", "--quiet"]  # fmt: skip
    status, out, _ = run(argv, capsys)
    assert status == 0 and "8 generated vs 16 real images, mnist test" in out
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["num_generated"] == 8 and results["num_real"] == 16 and results["dataset"] == "mnist"
    assert results["fid"] > 0 and np.isfinite(results["kid"])


def test_evaluating_the_real_images_themselves_gives_fid_zero(tmp_path, capsys, pixel_fid, mnist_subset):
    kd.data.files.save_npz_atomically(tmp_path / "real.npz", {"images": mnist_subset[0][:16]})
    argv = ["evaluate", "--images", tmp_path / "real.npz", "--dataset", "mnist", "--num-real", 16, "--out", tmp_path / "r.json"]
    assert run(argv, capsys)[0] == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["num_generated"] == 16 and abs(results["fid"]) < 1e-3


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["sample", "missing.keras"], 1, "does not exist"),
        (["sample", "{model}", "--labels", "12"], 1, "must lie in 0..9"),
        (["sample", "{model}", "--num", "5", "--labels", "1,2"], 1, "multiple of the number of --labels"),
        (["sample", "{model}", "--steps", "101"], 1, "cannot exceed the model's timesteps"),
        (["sample", "{model}", "--out", "grid.jpg"], 1, ".png"),
        (["train", "no_such_dataset_or_folder"], 1, "neither a known dataset"),
        (["evaluate", "--images", "samples.npz"], 1, "--dataset"),
        (["sample", "{model}", "--sampler", "no_such_sampler"], 2, "invalid choice"),
        (["sample", "{model}", "--num", "0"], 2, "positive integer"),
        (["sample", "{model}", "--labels", "one"], 2, "comma-separated integers"),
        (["evaluate", "--model", "{model}", "--images", "x.npz"], 2, "not allowed with"),
    ],
)
def test_bad_input_exits_1_with_one_line_and_bad_usage_exits_2(argv, status, message, model_path, tmp_path, capsys):
    os.chdir(tmp_path)  # nothing is written next to the tests, even on failure
    code, out, err = run([arg.replace("{model}", model_path) for arg in argv], capsys)
    assert code == status and message in err and "Traceback" not in err + out
    if status == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("keras-diffusion ")
    assert not list(tmp_path.iterdir())


def test_python_dash_m_entry_point_returns_the_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_diffusion", "sample", str(tmp_path / "missing.keras")],
        capture_output=True, text=True, timeout=300, cwd=REPOSITORY, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_an_image_folder_with_class_subfolders_loads_as_labelled_data_of_the_first_images_size(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("cats", 2), ("dogs", 3)):
        (tmp_path / name).mkdir()
        for index in range(count):
            matplotlib.image.imsave(tmp_path / name / f"{index}.png", rng.random((12, 8, 3)))
    images, labels, dataset = kd.datasets.load_dataset_or_folder(str(tmp_path), "train", None, None)
    assert images.shape == (5, 12, 8, 3) and labels.tolist() == [0, 0, 1, 1, 1] and dataset is None
    images, _, _ = kd.datasets.load_dataset_or_folder(str(tmp_path), "train", None, 4, image_size=(16, 16), grayscale=True)
    assert images.shape == (4, 16, 16, 1) and 0.0 <= images.min() and images.max() <= 1.0


def _command() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "keras-diffusion")
    found = beside if os.path.exists(beside) else shutil.which("keras-diffusion")
    if not found:
        pytest.skip("the keras-diffusion command is not installed")
    return found


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's C++ start-up lines")
def test_the_command_prints_no_engine_start_up_lines_unless_the_user_asks_for_them():
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_DIFFUSION_DEBUG")}
    quiet = subprocess.run([_command(), "--version"], env=environ, capture_output=True, text=True, check=True)
    assert quiet.stdout.strip() == f"keras-diffusion {kd.__version__}"
    assert "I0000" not in quiet.stderr and "oneDNN" not in quiet.stderr, quiet.stderr


@pytest.mark.parametrize("program, user_level, hidden", [
    ("keras-diffusion", None, True), ("keras-diffusion", "0", False), ("python", None, False),
])  # fmt: skip
def test_native_output_is_hidden_while_the_engines_start_only_in_the_command(
    program, user_level, hidden, monkeypatch, capfd
):
    monkeypatch.setattr(sys, "argv", [f"/some/bin/{program}"])
    monkeypatch.delenv("KERAS_DIFFUSION_DEBUG", raising=False)
    if user_level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", user_level)
    with kd._quiet_engine_start():
        os.write(2, b"native start-up line\n")
    os.write(2, b"after\n")
    assert ("native start-up line" in capfd.readouterr().err) is not hidden
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == ("2" if hidden else user_level)
