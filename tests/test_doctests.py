"""Every `>>>` example in the library's docstrings runs and prints what it shows.

The API reference pages render these docstrings, so they are documentation
code too. Examples marked `# doctest: +SKIP` need a trained model or data the
example cannot build in a line; they are rendered but not run.
"""

import doctest
import importlib
import os
import pkgutil
import tempfile

import keras
import numpy as np
import pytest

import keras_diffusion

GLOBALS = {"kd": keras_diffusion, "keras_diffusion": keras_diffusion, "keras": keras, "np": np, "os": os,
           "tempfile": tempfile}  # fmt: skip


def docstring_tests(module_name: str) -> list[doctest.DocTest]:
    """The module's own docstring examples (re-exported objects are tested in their own module)."""
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name, globs={**GLOBALS, **vars(module)})
    here = os.path.realpath(module.__file__)
    return [t for t in tests if t.examples and t.filename and os.path.realpath(t.filename) == here]


MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_diffusion.__path__, "keras_diffusion.")
    if not info.name.endswith("__main__") and docstring_tests(info.name)
)


def test_the_library_has_docstring_examples():
    assert {"keras_diffusion.samplers.registry", "keras_diffusion.schedules", "keras_diffusion.models.networks.unet"} <= set(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in docstring_tests(module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {module_name}:\n{''.join(report)}"
