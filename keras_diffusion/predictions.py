"""What the network predicts, and the conversions between the targets.

With x_t = √ᾱ x_0 + √(1-ᾱ) ε the network may predict ε ("epsilon", DDPM),
x_0 ("x0") or v = √ᾱ ε - √(1-ᾱ) x_0 ("v", Salimans & Ho 2022). Training and
sampling both go through these two functions, so a new target is added here
and nowhere else.
"""

from keras import ops

PREDICTIONS = ("epsilon", "x0", "v")


def check_prediction(prediction: str) -> str:
    """Returns `prediction` if it is known, else raises a ValueError naming the choices."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}.")
    return prediction


def training_target(prediction: str, x0, noise, signal, sigma):
    """The regression target for the network output.

    Args:
        prediction: one of `PREDICTIONS`.
        x0: clean data.
        noise: the ε that produced x_t.
        signal: √ᾱ_t, broadcastable to x0.
        sigma: √(1-ᾱ_t), broadcastable to x0.

    Returns:
        ε, x_0 or v, with x0's shape.
    """
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    return signal * noise - sigma * x0


def to_x0_and_epsilon(prediction: str, output, x_t, signal, sigma):
    """Turns a network output into the pair (x̂_0, ε̂) every sampler works with.

    Args:
        prediction: one of `PREDICTIONS`.
        output: the network output for x_t.
        x_t: the noisy input.
        signal: √ᾱ_t, broadcastable to x_t.
        sigma: √(1-ᾱ_t), broadcastable to x_t.

    Returns:
        (x̂_0, ε̂), each with x_t's shape.
    """
    if prediction == "epsilon":
        return (x_t - sigma * output) / signal, output
    if prediction == "x0":
        return output, (x_t - signal * output) / sigma
    # v-prediction: x0 = √ᾱ x_t - √(1-ᾱ) v, ε = √(1-ᾱ) x_t + √ᾱ v (with √ᾱ² + √(1-ᾱ)² = 1).
    return signal * x_t - sigma * output, sigma * x_t + signal * output


def min_snr_weight(prediction: str, snr, gamma: float):
    """The min-SNR-γ loss weight (Hang et al. 2023) for a regression on `prediction`.

    The weight makes every target's loss equal to min(SNR, γ)·‖x̂_0 − x_0‖²,
    with SNR = ᾱ/(1-ᾱ): min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0 and
    min(SNR, γ)/(SNR + 1) for v. It stops the nearly noise-free steps from
    dominating training.

    Args:
        prediction: one of `PREDICTIONS`.
        snr: ᾱ_t/(1-ᾱ_t) per sample.
        gamma: the clamp γ (5 in the paper).

    Returns:
        The weight per sample, shaped like `snr`.
    """
    clipped = ops.minimum(snr, gamma)
    if prediction == "epsilon":
        return clipped / snr
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1.0)
