"""What the network predicts, and the conversions between the targets.

With x_t = √ᾱ x_0 + √(1-ᾱ) ε the network may predict ε ("epsilon", DDPM),
x_0 ("x0"), v = √ᾱ ε - √(1-ᾱ) x_0 ("v", Salimans & Ho 2022) or the
preconditioned output F of EDM ("edm", Karras et al. 2022, section 5 and
table 1). Training and sampling both go through the functions below
(`network_input`, `training_target`, `to_x0_and_epsilon`), so a new target
is added here and nowhere else.

EDM in the variance-preserving notation. With s = √ᾱ, n = √(1-ᾱ), EDM's
noise level σ = n/s (x_t/s = x_0 + σ ε) and the data's standard deviation
σ_data, EDM's denoiser D = c_skip·x_t/s + c_out·F(c_in·x_t/s) becomes

    network input   x_t / r,                 r = √(n² + σ_data² s²)   (c_in)
    x̂_0             σ_data² s x_t / r² + n σ_data F / r              (c_skip, c_out)
    target of F     (n x_0 − σ_data² s ε) / (σ_data r)

and the plain squared error on F is EDM's loss with its weight
λ(σ) = 1/c_out². With σ_data = 1 (r = 1) F is −v: v-prediction is EDM's
preconditioning for data of unit variance. EDM's c_noise is not used: the
network is conditioned on the timestep t as with every other target.

Classifier-free guidance (Ho & Salimans 2022) combines the conditional and
unconditional predictions of one network (`classifier_free_guidance`); the
combination is affine, so it applies to every target here alike.
"""

from keras import ops

PREDICTIONS = ("epsilon", "x0", "v", "edm")

#: σ_data of EDM's preconditioning by default (EDM's value for images in [-1, 1]).
DEFAULT_SIGMA_DATA = 0.5


def check_prediction(prediction: str) -> str:
    """Returns `prediction` if it is known, else raises a ValueError naming the choices."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}.")
    return prediction


def _edm_scale(signal, sigma, sigma_data: float):
    """r = √(n² + σ_data² s²), the standard deviation of x_t when x_0 has standard deviation σ_data."""
    return (sigma * sigma + sigma_data**2 * signal * signal) ** 0.5  # operators: NumPy stays NumPy (float64)


def network_input(prediction: str, x_t, signal, sigma, sigma_data: float = DEFAULT_SIGMA_DATA):
    """What the network is given for x_t: x_t itself, or x_t / r for "edm" (EDM's c_in, unit variance).

    Args:
        prediction: one of `PREDICTIONS`.
        x_t: the noisy sample.
        signal: √ᾱ_t, broadcastable to x_t.
        sigma: √(1-ᾱ_t), broadcastable to x_t.
        sigma_data: σ_data of "edm"; unused otherwise.

    Returns:
        A tensor of x_t's shape.
    """
    if prediction == "edm":
        return x_t / _edm_scale(signal, sigma, sigma_data)
    return x_t


def training_target(prediction: str, x0, noise, signal, sigma, sigma_data: float = DEFAULT_SIGMA_DATA):
    """The regression target for the network output.

    Args:
        prediction: one of `PREDICTIONS`.
        x0: clean data.
        noise: the ε that produced x_t.
        signal: √ᾱ_t, broadcastable to x0.
        sigma: √(1-ᾱ_t), broadcastable to x0.
        sigma_data: σ_data of "edm"; unused otherwise.

    Returns:
        ε, x_0, v or EDM's F, with x0's shape.
    """
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "edm":
        return (sigma * x0 - sigma_data**2 * signal * noise) / (sigma_data * _edm_scale(signal, sigma, sigma_data))
    return signal * noise - sigma * x0


def to_x0_and_epsilon(prediction: str, output, x_t, signal, sigma, sigma_data: float = DEFAULT_SIGMA_DATA):
    """Turns a network output into the pair (x̂_0, ε̂) every sampler works with.

    Args:
        prediction: one of `PREDICTIONS`.
        output: the network output for x_t.
        x_t: the noisy sample (not the network's input, which differs for "edm").
        signal: √ᾱ_t, broadcastable to x_t.
        sigma: √(1-ᾱ_t), broadcastable to x_t.
        sigma_data: σ_data of "edm"; unused otherwise.

    Returns:
        (x̂_0, ε̂), each with x_t's shape.
    """
    if prediction == "epsilon":
        return (x_t - sigma * output) / signal, output
    if prediction == "x0":
        return output, (x_t - signal * output) / sigma
    if prediction == "edm":
        # x̂_0 = σ_d² s x_t / r² + n σ_d F / r; ε̂ = (x_t − s x̂_0)/n = n x_t / r² − s σ_d F / r (no division by n).
        r = _edm_scale(signal, sigma, sigma_data)
        return (
            sigma_data**2 * signal * x_t / (r * r) + sigma * sigma_data * output / r,
            sigma * x_t / (r * r) - signal * sigma_data * output / r,
        )
    # v-prediction: x0 = √ᾱ x_t - √(1-ᾱ) v, ε = √(1-ᾱ) x_t + √ᾱ v (with √ᾱ² + √(1-ᾱ)² = 1).
    return signal * x_t - sigma * output, sigma * x_t + signal * output


def min_snr_weight(prediction: str, snr, gamma: float, sigma_data: float = DEFAULT_SIGMA_DATA):
    """The min-SNR-γ loss weight (Hang et al. 2023) for a regression on `prediction`.

    The weight makes every target's loss equal to min(SNR, γ)·‖x̂_0 − x_0‖²,
    with SNR = ᾱ/(1-ᾱ): min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0,
    min(SNR, γ)/(SNR + 1) for v and min(SNR, γ)·σ_data²/(1 + σ_data² SNR)
    for EDM's F (c_out²). It stops the nearly noise-free steps from
    dominating training.

    Args:
        prediction: one of `PREDICTIONS`.
        snr: ᾱ_t/(1-ᾱ_t) per sample.
        gamma: the clamp γ (5 in the paper).
        sigma_data: σ_data of "edm"; unused otherwise.

    Returns:
        The weight per sample, shaped like `snr`.
    """
    clipped = ops.minimum(snr, gamma)
    if prediction == "epsilon":
        return clipped / snr
    if prediction == "x0":
        return clipped
    if prediction == "edm":
        return clipped * sigma_data**2 / (1.0 + sigma_data**2 * snr)
    return clipped / (snr + 1.0)


def classifier_free_guidance(eps_conditional, eps_unconditional, guidance_scale):
    """ε̂ = (1 + w) ε(x, c) − w ε(x, ∅) (Ho & Salimans 2022; the thesis' w).

    w = 0 gives the conditional model; larger w trades diversity for fidelity.
    The same combination applies to any prediction (ε, x₀ or v), which are
    affine in each other at a fixed x_t.

    Example:
    >>> classifier_free_guidance(1.0, 0.5, 2.0)
    2.0
    """
    return (1.0 + guidance_scale) * eps_conditional - guidance_scale * eps_unconditional
