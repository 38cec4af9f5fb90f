"""The package layout: imports run one way between the rooms, modules stay short, and models saved under the
module paths of the earlier flat layout still load."""

import ast
import pathlib

import keras
import numpy as np
import pytest
from conftest import tiny_unet

import keras_diffusion as kd

PACKAGE = pathlib.Path(kd.__file__).parent

# A room may import rooms of a lower floor, and itself; nothing runs back up. The maths a user picks by
# name share one floor (they may use each other); `training` and `data` sit below the models and metrics.
FLOORS = {
    "face": 9,
    "cli": 8,
    "callbacks": 7,
    "models": 6,
    "metrics": 5,
    "samplers": 4,
    "maths": 3,
    "training": 2,
    "data": 1,
    "runtime": 0,
}
MATHS = {"schedules", "noise", "timestep_sampling", "predictions", "ema"}
MAX_MODULE_LINES = 500


def room_of(module: str) -> str:
    """The room of a dotted module name inside keras_diffusion ("keras_diffusion.models.base" -> "models")."""
    parts = module.split(".")[1:]
    if not parts or parts[0] == "__main__":
        return "face"
    return "maths" if parts[0] in MATHS else parts[0]


def package_modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module; a package's `__init__.py` under the package's own name."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(path: pathlib.Path, module: str) -> set[str]:
    """Every keras_diffusion module `path` takes names from, at any depth of the file (imports inside functions
    too): `from keras_diffusion.callbacks import FIDCallback` gives `keras_diffusion.callbacks`, `from
    keras_diffusion import ema` gives `keras_diffusion.ema`, `import keras_diffusion as kd` the face itself."""
    modules = package_modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]  # what a relative import means
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("keras_diffusion"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("keras_diffusion"):
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name if name in modules else name.rpartition(".")[0] for name in names}


def test_every_room_is_known_to_the_floor_plan():
    rooms = {room_of(module) for module in package_modules()}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))}"


def test_imports_never_run_back_up_the_floors():
    upward = []
    for module, path in package_modules().items():
        room = room_of(module)
        for imported in imported_modules(path, module):
            target = room_of(imported)
            if target != room and FLOORS[target] >= FLOORS[room] and target != "face":
                upward.append(f"{module} ({room}) imports {imported} ({target})")
            if target == "face" and imported == "keras_diffusion" and room not in ("face", "cli"):
                upward.append(f"{module} ({room}) imports the package's face")
    assert not upward, "\n".join(upward)


def test_the_floor_check_sees_an_import_that_runs_up(tmp_path):
    path = tmp_path / "example.py"
    path.write_text(
        "import keras_diffusion as kd\nfrom keras_diffusion.callbacks import FIDCallback\n"
        "def f():\n    from keras_diffusion.models import diffusion_model\n"
    )
    found = imported_modules(path, "keras_diffusion.samplers.example")
    assert found == {"keras_diffusion", "keras_diffusion.callbacks", "keras_diffusion.models.diffusion_model"}


def test_no_module_is_longer_than_the_limit():
    long = {module: n for module, path in package_modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


# Where each saved class lived before the rooms: the "module" a .keras file written then holds.
OLD_MODULES = {
    "keras_diffusion.models.diffusion_model": "keras_diffusion.diffusion_model",
    "keras_diffusion.models.denoising_autoencoder": "keras_diffusion.denoising_autoencoder",
    "keras_diffusion.models.networks.unet": "keras_diffusion.models.unet",
    "keras_diffusion.models.networks.layers": "keras_diffusion.models.layers",
    "keras_diffusion.models.networks.normalization": "keras_diffusion.models.normalization",
    "keras_diffusion.runtime.initializers": "keras_diffusion.initializers",
    "keras_diffusion.training.optimizers": "keras_diffusion.optimizers",
}


def with_old_modules(config):
    """`config` with every "module" entry written as the flat layout wrote it."""
    if isinstance(config, dict):
        return {
            key: OLD_MODULES.get(value, value) if key == "module" else with_old_modules(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [with_old_modules(value) for value in config]
    return config


@pytest.fixture(scope="module")
def small_models():
    diffusion = kd.DiffusionModel(tiny_unet(), timesteps=20, seed=3)
    autoencoder = kd.models.DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, seed=7)
    return diffusion, autoencoder


def test_configs_saved_under_the_old_module_paths_load(small_models):
    for model in small_models:
        config = keras.saving.serialize_keras_object(model)
        old = with_old_modules(config)
        assert old != config, "the test must rewrite at least one module path"
        restored = keras.saving.deserialize_keras_object(old)
        assert type(restored) is type(model) and restored.get_config() == model.get_config()


def test_the_optimizer_saved_under_its_old_module_path_loads():
    config = with_old_modules(keras.saving.serialize_keras_object(kd.optimizers.Adam(3e-4)))
    assert config["module"] == "keras_diffusion.optimizers"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is kd.optimizers.Adam and float(restored.learning_rate) == pytest.approx(3e-4)


DATA = pathlib.Path(__file__).parent / "data"


def test_a_model_file_written_by_the_flat_layout_loads_and_samples_what_it_sampled_then():
    """tests/data/flat_layout_model.keras: a tiny conditional model with two power-function EMAs and a scheduled
    Adam, trained for 4 updates and saved by the code before the rooms (commit b3fa3b8); beside it, per backend,
    what that code generated from the file (ddim, 5 steps, w = 1, seed 7), the second EMA's first weight and the
    counters. The file keeps the module paths of the flat layout in its config."""
    reference = DATA / f"flat_layout_model_{keras.backend.backend()}.npz"
    if not reference.exists():
        pytest.skip(f"no reference samples for the {keras.backend.backend()} backend")
    expected = np.load(reference)
    model = keras.models.load_model(DATA / "flat_layout_model.keras")
    config = (DATA / "flat_layout_model.keras").read_bytes()
    assert b"keras_diffusion.diffusion_model" in zipfile_member(config, "config.json")
    images = model.generate(4, sampler="ddim", steps=5, labels=[0, 1, 2, 0], guidance_scale=1.0, seed=7)
    np.testing.assert_allclose(images, expected["images"], atol=1e-5)
    np.testing.assert_array_equal(model.ema_weights(1)[0], expected["ema1_first"])
    assert model.ema_updates == int(expected["ema_updates"])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == int(expected["iterations"])


def zipfile_member(data: bytes, name: str) -> bytes:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)
