"""The Fréchet distance between two Gaussians, the number behind FID."""

import numpy as np
import scipy.linalg


def _validated(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be a vector; got shape {mu.shape}.")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"sigma{which} must be a square ({mu.shape[0]}, {mu.shape[0]}) matrix matching "
            f"mu{which}; got shape {sigma.shape}."
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{which} or sigma{which} contains NaN or infinite values.")
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * scale):
        raise ValueError(f"sigma{which} is not symmetric, so it is not a covariance matrix.")
    return mu, (sigma + sigma.T) / 2


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = scipy.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """`tr(sqrtm(sigma1 @ sigma2))` for two covariance matrices, stably.

    `sigma1 @ sigma2` is similar to the symmetric positive semi-definite
    `sqrt(sigma1) @ sigma2 @ sqrt(sigma1)`, so both have the same
    (non-negative) eigenvalues and the trace of the square root is the sum of
    their square roots. Two symmetric eigendecompositions replace the general
    `scipy.linalg.sqrtm`: no complex parts to drop, no `eps * I` retries for
    the singular covariances of N < D samples, and round-off negatives are
    clipped to 0.

    Args:
        sigma1: `(D, D)` symmetric positive semi-definite.
        sigma2: `(D, D)` symmetric positive semi-definite.

    Returns:
        The trace as a float.

    Example:
    >>> trace_sqrt_product(np.diag([4.0, 1.0]), np.diag([1.0, 9.0]))
    5.0
    """
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = scipy.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    `d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`
    (Dowson & Landau 1982; FID, Heusel et al. 2017, eq. 6). The trace term is
    computed by `trace_sqrt_product`; the result is clamped at 0, which it can
    only undershoot by round-off.

    Args:
        mu1: `(D,)` mean of the first Gaussian.
        sigma1: `(D, D)` covariance of the first Gaussian.
        mu2: `(D,)` mean of the second Gaussian.
        sigma2: `(D, D)` covariance of the second Gaussian.

    Returns:
        A non-negative float.

    Raises:
        ValueError: on shape mismatches, non-finite or non-symmetric input.

    Example:
    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
    4.0
    """
    mu1, sigma1 = _validated(mu1, sigma1, "1")
    mu2, sigma2 = _validated(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"The two Gaussians have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}.")
    difference = mu1 - mu2
    distance = (
        difference @ difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2.0 * trace_sqrt_product(sigma1, sigma2)
    )
    return float(max(distance, 0.0))
