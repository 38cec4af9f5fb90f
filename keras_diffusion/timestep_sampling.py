"""Which noise levels training visits: the distribution of the timestep t in the diffusion loss.

DDPM draws t uniformly from 0..T-1 (`UniformTimesteps`), so the levels are
visited as the noise schedule spaces them. EDM (Karras et al. 2022, section 5,
table 1) instead draws the noise level σ = √((1-ᾱ)/ᾱ) from a log-normal,

    ln σ ~ N(P_mean, P_std²),   P_mean = −1.2, P_std = 1.2     (EDM's p_train)

which spends training on the middle levels, where the loss can still fall,
rather than on nearly clean or nearly pure-noise inputs. `LogNormalTimesteps`
draws that σ and trains on the schedule's timestep whose σ_t is nearest (in
log σ), so every sampler and the rest of the model stay on the discrete
schedule they were built for.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_diffusion")
class UniformTimesteps:
    """t uniform on 0..T-1, DDPM's choice (the default).

    Example:
    >>> t = UniformTimesteps().sample(4, keras_diffusion.schedules.get_schedule("cosine"), keras.random.SeedGenerator(0))
    >>> tuple(t.shape)
    (4,)
    """

    name = "uniform"

    def sample(self, count: int, schedule, seed):
        """`count` int32 timesteps in [0, T) drawn with the `SeedGenerator` `seed`.

        Args:
            count: how many.
            schedule: the model's `keras_diffusion.schedules.NoiseSchedule`.
            seed: a `keras.random.SeedGenerator`.

        Returns:
            An int32 tensor of shape (count,).
        """
        return keras.random.randint((count,), 0, schedule.timesteps, seed=seed)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


@keras.saving.register_keras_serializable(package="keras_diffusion")
class LogNormalTimesteps(UniformTimesteps):
    """The timestep whose σ_t is nearest to a log-normal σ (EDM's training distribution).

    Args:
        mean: P_mean, the mean of ln σ (EDM: −1.2).
        std: P_std, the standard deviation of ln σ (EDM: 1.2), > 0.

    Example:
    >>> sampler = LogNormalTimesteps(mean=-1.2, std=1.2)
    >>> schedule = keras_diffusion.schedules.get_schedule("cosine")
    >>> t = sampler.sample(1000, schedule, keras.random.SeedGenerator(0))
    >>> bool(np.median(np.log(schedule.sigmas[keras.ops.convert_to_numpy(t)])) < 0)
    True
    """

    name = "log_normal"

    def __init__(self, mean: float = -1.2, std: float = 1.2):
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ValueError(f"LogNormalTimesteps needs a finite `mean` and a positive `std`; received {mean!r}, {std!r}.")
        self.mean, self.std = float(mean), float(std)

    def sample(self, count: int, schedule, seed):
        log_sigma = self.mean + self.std * keras.random.normal((count, 1), seed=seed)
        levels = ops.convert_to_tensor(np.log(schedule.sigmas)[None, :].astype("float32"))
        # The nearest level in log σ (levels outside the schedule's range go to its first or last step).
        return ops.cast(ops.argmin(ops.abs(levels - log_sigma), axis=1), "int32")

    def get_config(self) -> dict:
        return {"mean": self.mean, "std": self.std}


_BY_NAME = {cls.name: cls for cls in (UniformTimesteps, LogNormalTimesteps)}


def get_timestep_sampling(identifier: "str | dict | UniformTimesteps") -> UniformTimesteps:
    """A timestep distribution from its name (`"uniform"`, `"log_normal"`), a serialised config or an instance.

    Args:
        identifier: the name, `keras.saving.serialize_keras_object`'s output, or an instance.

    Returns:
        A `UniformTimesteps` or `LogNormalTimesteps`.

    Example:
    >>> get_timestep_sampling("log_normal")
    LogNormalTimesteps(mean=-1.2, std=1.2)
    """
    if isinstance(identifier, UniformTimesteps):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if not isinstance(identifier, str) or identifier not in _BY_NAME:
        raise ValueError(
            f"Unknown timestep_sampling {identifier!r}; use one of {sorted(_BY_NAME)} or an instance such as "
            "keras_diffusion.timestep_sampling.LogNormalTimesteps(mean=-1.2, std=1.2)."
        )
    return _BY_NAME[identifier]()
