"""Noise distributions of the forward process: Gaussian (DDPM) and a two-component Gaussian mixture (MG-DDM).

A distribution draws the ε of x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (the thesis' eq. 27
with N_t in place of ε) in training, and the starting noise and per-step noise
of the samplers. Every distribution has mean 0 and variance 1, so the
schedule's ᾱ keeps its meaning.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_diffusion")
class GaussianNoise:
    """ε ~ N(0, I), the noise of DDPM.

    Example:
    >>> tuple(GaussianNoise().sample((2, 3), keras.random.SeedGenerator(0)).shape)
    (2, 3)
    """

    name = "gaussian"

    def sample(self, shape, seed, dtype="float32"):
        """Draws a tensor of `shape` from the distribution, using the `SeedGenerator` `seed`."""
        return keras.random.normal(shape, dtype=dtype, seed=seed)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


@keras.saving.register_keras_serializable(package="keras_diffusion")
class MixtureGaussianNoise(GaussianNoise):
    """N = b ε¹ + (1 − b) ε², b ~ Bernoulli(p), εⁱ ~ N(mⁱ, φ²) per element (the thesis' eq. 25-26; Nachmani et al. 2021).

    The component means
    m¹ = √((1 − φ²) / (p(1 − p) + p³/(1 − p) + 2p²)) and m² = −p/(1 − p) · m¹
    (eq. 26) make the mixture zero-mean with unit variance; for φ → 0 it is
    strongly bimodal, for φ → 1 it tends to N(0, 1).

    Args:
        p: probability of the first component, in (0, 1).
        phi: standard deviation φ of each component, in (0, 1).

    Example:
    >>> noise = MixtureGaussianNoise(p=0.5, phi=0.5)
    >>> round(noise.means[0], 4), round(noise.means[1], 4)
    (0.866, -0.866)
    """

    name = "mixture_gaussian"

    def __init__(self, p: float = 0.5, phi: float = 0.5):
        if not 0.0 < p < 1.0:
            raise ValueError(f"`p` (the mixture weight) must lie in (0, 1); received p={p!r}.")
        if not 0.0 < phi < 1.0:
            raise ValueError(f"`phi` (each component's standard deviation) must lie in (0, 1); received phi={phi!r}.")
        self.p, self.phi = float(p), float(phi)
        m1 = np.sqrt((1.0 - phi**2) / (p * (1.0 - p) + p**3 / (1.0 - p) + 2.0 * p**2))
        self.means = (float(m1), float(-p / (1.0 - p) * m1))

    def sample(self, shape, seed, dtype="float32"):
        first = keras.random.uniform(shape, seed=seed) < self.p
        standard = keras.random.normal(shape, dtype=dtype, seed=seed)
        return ops.where(first, self.means[0], self.means[1]) + self.phi * standard

    def get_config(self):
        return {"p": self.p, "phi": self.phi}


_NOISES = {"gaussian": GaussianNoise, "mixture_gaussian": MixtureGaussianNoise}


def get_noise(identifier) -> GaussianNoise:
    """A noise distribution from a name, a config dict or an instance.

    Example:
    >>> get_noise("mixture_gaussian")
    MixtureGaussianNoise(p=0.5, phi=0.5)
    """
    if isinstance(identifier, GaussianNoise):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier in _NOISES:
        return _NOISES[identifier]()
    raise ValueError(
        f"Unknown noise {identifier!r}; use one of {sorted(_NOISES)} or a keras_diffusion.noise distribution "
        "such as MixtureGaussianNoise(p=0.3, phi=0.5)."
    )
