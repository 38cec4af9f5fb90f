"""FID against network evaluations (NFE): one model, several samplers and step counts.

The figure every sampler comparison draws (Karras et al. 2022, Lu et al. 2022):
each point generates the same number of images from the same seed with one
(sampler, steps) configuration and measures their FID against fixed real
statistics, so only the sampler differs between points.
"""

import csv
import dataclasses
import io
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from keras_diffusion import samplers as sampler_registry
from keras_diffusion.data.files import write_bytes_atomically
from keras_diffusion.metrics.fid import FID
from keras_diffusion.metrics.statistics import FeatureStatistics
from keras_diffusion.samplers import Sampling, sampler_label


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One (sampler, steps) configuration and the FID of its samples.

    Args:
        sampler: the sampler's name (`Sampler.name`).
        steps: the `steps` passed to `generate` (adaptive samplers ignore it).
        nfe: network evaluations per image (`Sampler.function_evaluations`;
            for an adaptive sampler, those of the last batch it solved).
        fid: the FID, >= 0.
        num_samples: generated images (N).
        num_real_samples: real images behind the reference statistics.
        generate_seconds: wall time of `generate` for the N images.

    Example:
    >>> SweepPoint("ddim", 20, 20, 12.5, 2048, 10000, 30.0).nfe
    20
    """

    sampler: str
    steps: int
    nfe: int
    fid: float
    num_samples: int
    num_real_samples: int
    generate_seconds: float


def fid_versus_nfe(
    model: Any,
    real_statistics: FeatureStatistics,
    samplers: Sequence["str | sampler_registry.Sampler"],
    steps: Sequence[int],
    *,
    num_samples: int = 2048,
    sampling: Sampling | None = None,
    seed: int = 0,
    fid: FID | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> list[SweepPoint]:
    """FID of `model.generate` for every sampler at every step count.

    All configurations are checked before anything is generated, so a bad
    name or step count fails at once rather than an hour into the sweep.
    Adaptive samplers (`Sampler.adaptive`, the ODE solver) run once, at their
    own evaluations.

    Args:
        model: a trained `DiffusionModel` (or anything with its `generate`).
        real_statistics: Inception statistics of the real images, e.g.
            `FID().real_statistics(images, "mnist", "test")`.
        samplers: names from `samplers.available()` or `Sampler` instances.
        steps: step counts (>= 1) to try with each non-adaptive sampler.
        num_samples: images per point (N); FID wants >= 2048.
        sampling: the settings every point shares (guidance weight, batch
            size, EMA or raw weights; `keras_diffusion.samplers.Sampling`);
            each point replaces its sampler and steps. None for the defaults.
        seed: the same seed for every point (same start noise and labels).
        fid: the `FID` to use (its feature extractor is reused); a new one when None.
        on_point: called with each `SweepPoint` as soon as it is measured.

    Returns:
        The points, in the order sampler by sampler, steps ascending.

    Example:
    >>> fid = kd.metrics.FID()  # doctest: +SKIP
    >>> real = fid.real_statistics(test_images, "mnist", "test")  # doctest: +SKIP
    >>> points = fid_versus_nfe(model, real, ["ddim", "dpmpp_2m"], [10, 20])  # doctest: +SKIP
    """
    configurations = _configurations(samplers, steps)
    if not isinstance(real_statistics, FeatureStatistics):
        raise TypeError(
            "`real_statistics` must be FeatureStatistics, e.g. FID().real_statistics(images, 'mnist', 'test'); "
            f"received {type(real_statistics).__name__}."
        )
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"`num_samples` must be an integer >= 2 (FID needs a covariance); received {num_samples!r}.")
    fid = fid or FID()
    points = []
    for sampler, step_count in configurations:
        start = time.perf_counter()
        settings = (sampling or Sampling()).replace(sampler=sampler, steps=step_count)
        images = model.generate(num_samples, seed=seed, **settings.arguments())
        seconds = time.perf_counter() - start
        result = fid(real_statistics, images)
        point = SweepPoint(
            sampler=sampler_label(sampler), steps=step_count, nfe=int(sampler.function_evaluations(step_count)),
            fid=float(result.value), num_samples=result.num_samples, num_real_samples=result.num_real_samples,
            generate_seconds=round(seconds, 2),
        )  # fmt: skip
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def _configurations(samplers, steps):
    if isinstance(samplers, str):
        samplers = [samplers]
    if not samplers:
        raise ValueError("`samplers` is empty; pass names such as ['ddim', 'dpmpp_2m'].")
    steps = sorted({_positive_steps(s) for s in steps}) if steps else []
    configurations = []
    for identifier in samplers:
        sampler = sampler_registry.get_sampler(identifier)
        if sampler.adaptive:
            configurations.append((sampler, 1))
            continue
        if not steps:
            raise ValueError(f"`steps` is empty; the {sampler.name!r} sampler needs step counts such as [10, 20].")
        configurations.extend((sampler, s) for s in steps)
    return configurations


def _positive_steps(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Step counts must be integers >= 1; received {value!r}.")
    return value


def write_sweep(points: Sequence[SweepPoint], path: str | os.PathLike, title: str | None = None) -> None:
    """Writes the FID-vs-NFE figure to `path` (.png) and the table beside it (.csv), atomically.

    Args:
        points: the result of `fid_versus_nfe`.
        path: the figure's path; the table goes to the same path with `.csv`.
        title: optional figure title (e.g. the model and dataset).

    Returns:
        None.

    Example:
    >>> import tempfile
    >>> points = [SweepPoint("ddim", s, s, 30.0 / s, 64, 64, 1.0) for s in (5, 10)]
    >>> write_sweep(points, os.path.join(tempfile.mkdtemp(), "sweep.png"))
    """
    if not points:
        raise ValueError("No points to write; run fid_versus_nfe first.")
    path = os.fspath(path)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=[field.name for field in dataclasses.fields(SweepPoint)])
    writer.writeheader()
    writer.writerows(dataclasses.asdict(point) for point in points)
    write_bytes_atomically(os.path.splitext(path)[0] + ".csv", table.getvalue().encode())
    write_bytes_atomically(path, plot_fid_versus_nfe(points, title))


def read_sweep(path: str | os.PathLike) -> list[SweepPoint]:
    """Reads the `.csv` table `write_sweep` wrote (give the `.png` or the `.csv` path).

    Args:
        path: the figure's or the table's path.

    Returns:
        The points, typed as `SweepPoint`s.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sweep.png")
    >>> write_sweep([SweepPoint("heun", 10, 19, 8.5, 64, 64, 2.0)], path)
    >>> read_sweep(path)[0].nfe
    19
    """
    types = {field.name: field.type for field in dataclasses.fields(SweepPoint)}
    with open(os.path.splitext(os.fspath(path))[0] + ".csv", newline="") as file:
        return [SweepPoint(**{k: _parse(types[k], v) for k, v in row.items()}) for row in csv.DictReader(file)]


def _parse(kind: type, text: str):
    return kind(text)


def plot_fid_versus_nfe(points: Sequence[SweepPoint], title: str | None = None) -> bytes:
    """The FID-vs-NFE figure (log NFE axis, one line per sampler) as PNG bytes.

    Args:
        points: the result of `fid_versus_nfe`.
        title: optional figure title.

    Returns:
        PNG bytes.

    Example:
    >>> png = plot_fid_versus_nfe([SweepPoint("ddim", 10, 10, 9.0, 64, 64, 1.0)])
    >>> png[:4]
    b'\\x89PNG'
    """
    names = list(dict.fromkeys(point.sampler for point in points))
    figure = Figure(figsize=(9, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colors = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    for index, name in enumerate(names):
        line = sorted((p.nfe, p.fid) for p in points if p.sampler == name)
        style = "-" if index < len(colors) else "--"
        axes.plot(*zip(*line), style, marker="o", color=colors[index % len(colors)], label=name)
    sizes = sorted({p.num_samples for p in points})
    axes.set_xscale("log")
    fids = [p.fid for p in points]
    if min(fids) > 0 and max(fids) / min(fids) > 5:  # a few coarse points would flatten the rest
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(ScalarFormatter())
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set_yticks([v for v in (1, 2, 5, 10, 15, 20, 30, 50, 100, 200, 500) if min(fids) / 1.2 <= v <= max(fids) * 1.2])
    nfes = [p.nfe for p in points]
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if min(nfes) / 1.1 <= v <= max(nfes) * 1.1]
    axes.set_xticks(ticks if len(ticks) >= 2 else sorted(set(nfes)))  # plain numbers, not 2×10¹
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("network evaluations per image (NFE)")
    axes.set_ylabel(f"FID (N = {', '.join(map(str, sizes))})")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes: never over a point
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
