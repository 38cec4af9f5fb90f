"""kd.metrics.fid_versus_nfe: the FID-vs-NFE sweep behind benchmarks/sampler_quality.py and the example."""

import warnings

import matplotlib.image
import numpy as np
import pytest
from conftest import pixel_features

import keras_diffusion as kd
from keras_diffusion.metrics.sampler_sweep import read_sweep


@pytest.fixture(scope="module")
def sweep(tiny_conditional):
    fid = kd.metrics.FID(feature_extractor=pixel_features)
    real = fid.real_statistics(np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype("float32"))
    ode = kd.samplers.ProbabilityFlowODESampler(rtol=1e-2, atol=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # N < 2048 warns
        points = kd.metrics.fid_versus_nfe(
            tiny_conditional, real, ["ddim", "heun", ode], [3, 2], num_samples=16, sampling=kd.samplers.Sampling(batch_size=16), fid=fid, seed=3
        )
    return fid, real, points


def test_points_cover_every_configuration_with_its_network_evaluations(sweep):
    _, _, points = sweep
    configurations = [(p.sampler, p.steps, p.nfe) for p in points]
    assert configurations[:4] == [("ddim", 2, 2), ("ddim", 3, 3), ("heun", 2, 3), ("heun", 3, 5)]
    assert [(p.sampler, p.steps) for p in points[4:]] == [("ode (rtol=0.01, atol=0.01)", 1)]  # adaptive: run once; settings named
    assert points[4].nfe > 2
    assert all(p.num_samples == 16 and p.num_real_samples == 64 and p.fid >= 0 for p in points)


def test_a_point_is_the_fid_of_generate_with_the_same_seed(sweep, tiny_conditional):
    fid, real, points = sweep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        direct = fid(real, tiny_conditional.generate(16, sampler="heun", steps=3, seed=3, batch_size=16))
    assert points[3].fid == pytest.approx(direct.value, rel=1e-6)
    assert len({p.fid for p in points}) == len(points)  # the samplers really differ


def test_write_and_read_back_the_table_and_the_figure(sweep, tmp_path):
    _, _, points = sweep
    path = tmp_path / "sweep" / "fid_vs_nfe.png"
    kd.metrics.write_sweep(points, path, title="tiny")
    assert read_sweep(path) == points
    figure = matplotlib.image.imread(path)
    assert figure.ndim == 3 and figure.shape[1] > figure.shape[0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["fid_vs_nfe.csv", "fid_vs_nfe.png"]


class NeverGenerates:
    def generate(self, *args, **kwargs):
        raise AssertionError("the sweep generated before checking its configurations")


@pytest.mark.parametrize(
    "samplers, steps, message",
    [
        (["ddim", "dpmpp"], [10], "Unknown sampler 'dpmpp'"),
        (["ddim"], [10, 0], "integers >= 1"),
        (["ddim"], [], "`steps` is empty"),
        ([], [10], "`samplers` is empty"),
    ],
)
def test_bad_configurations_fail_before_any_generation(samplers, steps, message):
    real = kd.metrics.FeatureStatistics.from_features(np.random.default_rng(0).normal(size=(8, 4)))
    with pytest.raises(ValueError, match=message):
        kd.metrics.fid_versus_nfe(NeverGenerates(), real, samplers, steps)


def test_real_statistics_must_be_statistics():
    with pytest.raises(TypeError, match="real_statistics"):
        kd.metrics.fid_versus_nfe(NeverGenerates(), np.zeros((4, 8, 8, 1)), ["ddim"], [10])
