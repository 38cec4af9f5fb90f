"""keras_diffusion.runtime.defaults: the XLA:CPU flag, JAX's compilation cache and Grappler are changed only where wanted."""

import importlib.metadata
import json
import os
import subprocess
import sys

import keras
import pytest

from keras_diffusion.runtime import defaults

ON_JAX = keras.backend.backend() == "jax"


@pytest.mark.parametrize("version", ["0.8.2", "0.9.0.1", "0.10.2", "0.10.2.dev20260101+cuda"])
def test_the_flag_is_added_on_jax_for_jaxlib_releases_that_know_it(version):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert defaults.use_multithreaded_xla_cpu_convolutions(environ, jaxlib_version=version, cpus=2) is ON_JAX
    expected = f"--xla_force_host_platform_device_count=2 {defaults.XLA_CPU_CONVOLUTION_FLAG}"
    assert environ["XLA_FLAGS"] == (expected if ON_JAX else "--xla_force_host_platform_device_count=2")


@pytest.mark.parametrize("version", ["0.4.26", "0.8.1", "0.10.3", "1.0", "0.11rc1", ""])
def test_jaxlib_releases_not_checked_for_the_flag_get_nothing(version):
    # XLA aborts the process on a flag or value it does not know; 0.8.1 has the flag but not the value.
    environ = {}
    assert defaults.use_multithreaded_xla_cpu_convolutions(environ, jaxlib_version=version, cpus=2) is False
    assert environ == {}


def test_one_usable_cpu_gets_nothing():
    # On one core YNNPACK's single-threaded convolutions are as fast as XLA's Eigen ones or faster.
    environ = {}
    assert defaults.use_multithreaded_xla_cpu_convolutions(environ, jaxlib_version="0.10.2", cpus=1) is False
    assert environ == {}


def test_a_ynn_setting_of_the_users_own_is_kept():
    environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    assert defaults.use_multithreaded_xla_cpu_convolutions(environ, jaxlib_version="0.10.2", cpus=2) is False
    assert environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"


def test_importing_keras_diffusion_sets_the_flag_on_jax_only():
    environ = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"}
    environ["KERAS_BACKEND"] = keras.backend.backend()
    script = "import os, keras_diffusion; print(os.environ.get('XLA_FLAGS', ''))"
    flags = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    try:
        lowest, highest = defaults._FLAG_JAXLIB_RANGE
        known = lowest <= defaults._release(importlib.metadata.version("jaxlib")) <= highest
    except importlib.metadata.PackageNotFoundError:
        known = False
    wanted = ON_JAX and known and defaults.usable_cpus() >= 2
    assert flags.stdout.strip() == (defaults.XLA_CPU_CONVOLUTION_FLAG if wanted else "")


def test_grappler_is_off_on_a_cpu_after_import_unless_asked_on():
    # The tests run with what importing keras_diffusion set (conftest leaves it alone).
    if ON_JAX:
        assert defaults.skip_tensorflow_graph_rewrites({}) is False
        assert defaults.tensorflow_graph_rewrites() is None
        return
    import tensorflow as tf

    on_a_cpu = not (tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    choice = os.environ.get(defaults.GRAPPLER_ENV, "").strip().lower()
    before = defaults.tensorflow_graph_rewrites()
    assert before is ({"on": True, "off": False}.get(choice, not on_a_cpu))
    try:
        defaults.tensorflow_graph_rewrites(True)
        assert defaults.skip_tensorflow_graph_rewrites({defaults.GRAPPLER_ENV: "on"}) is False
        assert defaults.tensorflow_graph_rewrites() is True
        assert defaults.skip_tensorflow_graph_rewrites({defaults.GRAPPLER_ENV: "off"}) is True
        assert defaults.tensorflow_graph_rewrites() is False
        defaults.tensorflow_graph_rewrites(True)
        assert defaults.skip_tensorflow_graph_rewrites({}) is on_a_cpu
        assert defaults.tensorflow_graph_rewrites() is not on_a_cpu
    finally:
        defaults.tensorflow_graph_rewrites(before)


def test_a_grappler_setting_other_than_on_or_off_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="KERAS_DIFFUSION_GRAPPLER must be 'on'.*or 'off'; received 'yes'"):
        defaults.skip_tensorflow_graph_rewrites({defaults.GRAPPLER_ENV: "yes"})


def test_importing_keras_diffusion_gives_jax_a_compilation_cache_that_programs_are_written_to(tmp_path):
    # Always run on JAX (a subprocess), so both halves of the suite check it; with no cache of the user's.
    environ = {name: value for name, value in os.environ.items() if not name.startswith("JAX_COMPILATION_CACHE")}
    environ.update(KERAS_BACKEND="jax", KERAS_HOME=str(tmp_path / "home"))
    environ.pop(defaults.JAX_CACHE_ENV, None)
    script = (
        "import jax, keras_diffusion\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
        "jax.jit(lambda x: x * 2 + 1)(1.0).block_until_ready()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    folder = tmp_path / "home" / defaults.CACHE_SUBDIR / "jax_cache"
    assert result.stdout.strip() == str(folder)
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)  # JAX trusts the cache: the user's alone
    assert [p for p in folder.iterdir() if not p.name.endswith(".lock")], "no compiled program was written"


def test_a_cache_of_the_users_own_or_off_leaves_jax_alone(tmp_path):
    assert defaults.use_persistent_compilation_cache({defaults.JAX_CACHE_ENV: "off"}) is None
    if not ON_JAX:
        assert defaults.use_persistent_compilation_cache({defaults.JAX_CACHE_ENV: str(tmp_path / "cache")}) is None
        assert not (tmp_path / "cache").exists()  # not even created
        return
    import jax

    # The tests set JAX_COMPILATION_CACHE_DIR (conftest), which JAX read as its own setting: it is kept.
    before = jax.config.jax_compilation_cache_dir
    assert before == os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert defaults.use_persistent_compilation_cache({defaults.JAX_CACHE_ENV: str(tmp_path / "elsewhere")}) is None
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "elsewhere").exists()


def test_an_unwritable_cache_folder_is_skipped_not_fatal(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    environ = {name: value for name, value in os.environ.items() if not name.startswith("JAX_COMPILATION_CACHE")}
    environ.update(KERAS_BACKEND="jax", **{defaults.JAX_CACHE_ENV: str(blocker / "cache")})
    script = "import jax, keras_diffusion; print(jax.config.jax_compilation_cache_dir)"
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "None"


def test_one_switch_turns_every_engine_default_off():
    environ = {name: value for name, value in os.environ.items() if name not in ("XLA_FLAGS",)}
    environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    environ.update(KERAS_BACKEND=keras.backend.backend(), KERAS_DIFFUSION_ENGINE_DEFAULTS="off")
    script = (
        "import json, os, keras, keras_diffusion as kd\n"
        "cache = None\n"
        "if keras.backend.backend() == 'jax':\n"
        "    import jax; cache = jax.config.jax_compilation_cache_dir\n"
        "print(json.dumps([os.environ.get('XLA_FLAGS', ''), kd.runtime.tensorflow_graph_rewrites(), cache]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    xla_flags, grappler, jax_cache = json.loads(result.stdout.strip().splitlines()[-1])
    assert xla_flags == ""
    assert grappler is (True if keras.backend.backend() == "tensorflow" else None)  # TensorFlow's own default
    assert jax_cache is None


def test_the_switch_names_its_values_when_misspelt():
    with pytest.raises(ValueError, match="KERAS_DIFFUSION_ENGINE_DEFAULTS must be 'on'"):
        defaults.apply_engine_defaults({"KERAS_DIFFUSION_ENGINE_DEFAULTS": "no"})
