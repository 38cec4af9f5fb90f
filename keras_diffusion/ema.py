"""Power-function EMA and post-hoc EMA reconstruction (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", EDM2, section 3 and appendix C).

A traditional EMA with a fixed decay averages over a fixed number of updates,
which is too long early in training and too short late. A *power-function*
EMA averages the weights θ_τ of updates τ = 0..t with weights ∝ τ^γ, so its
length is a fixed *fraction* of the run: its relative standard deviation

    σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3))                  (EDM2 eq. 123)

does not depend on t. It is tracked with the per-update decay

    β_t = (1 − 1/t)^(γ + 1)                                 (EDM2 eq. 127)

Keeping two such EMAs (σ_rel 0.05 and 0.10 in EDM2) and saving snapshots of
them now and then lets one reconstruct, after training, the EMA of *any*
σ_rel at any snapshot time: each snapshot's averaging profile is a known
power function p(τ; t, γ) = (γ + 1)/t · (τ/t)^γ on [0, t], and the target
profile is approximated by the least-squares combination of the snapshots'
profiles, whose inner products have the closed form of
`power_profile_inner_product`. The same combination of the snapshots'
weights is the reconstructed EMA.
"""

from collections.abc import Sequence

import numpy as np


def exponent_to_std(exponent: float | np.ndarray) -> np.ndarray:
    """σ_rel of a power-function EMA with exponent γ (EDM2 eq. 123).

    Args:
        exponent: γ > 0 (or an array of them).

    Returns:
        float64 σ_rel, same shape.

    Example:
    >>> round(float(exponent_to_std(6.94)), 4)
    0.1
    """
    exponent = np.asarray(exponent, dtype="float64")
    return np.sqrt((exponent + 1) / ((exponent + 2) ** 2 * (exponent + 3)))


def std_to_exponent(std: float | np.ndarray) -> np.ndarray:
    """The exponent γ of the power-function EMA with relative standard deviation σ_rel.

    Inverts eq. 123: with s = σ_rel⁻², γ is the largest real root of
    γ³ + 7γ² + (16 − s)γ + (12 − s) = 0 (EDM2 eq. 126).

    Args:
        std: σ_rel in (0, 0.2887) (γ > 0 needs σ_rel < √(1/12)), or an array.

    Returns:
        float64 γ, same shape.

    Example:
    >>> round(float(std_to_exponent(0.1)), 2)
    6.94
    """
    std = np.asarray(std, dtype="float64")
    if np.any(~np.isfinite(std)) or np.any(std <= 0) or np.any(std >= np.sqrt(1 / 12)):
        raise ValueError(f"A power-function EMA needs 0 < std < {np.sqrt(1 / 12):.4f} (γ > 0); received {std}.")
    inverse_squares = std.reshape(-1) ** -2
    exponents = [np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max() for s in inverse_squares]
    return np.asarray(exponents, dtype="float64").reshape(std.shape)


def power_ema_decay(updates: int, exponent: float) -> float:
    """β_t = (1 − 1/t)^(γ+1), the decay that makes an EMA follow the power profile (EDM2 eq. 127).

    Folding in the weights of update t with `ema ← β_t · ema + (1 − β_t) · θ_t`
    keeps ema = Σ_τ w_τ θ_τ with w_τ ∝ τ^γ (in the limit of many updates).

    Args:
        updates: t, the number of updates behind θ_t (0 or 1 give β = 0: the
            EMA starts at the weights).
        exponent: γ.

    Returns:
        β_t in [0, 1).

    Example:
    >>> power_ema_decay(1, 6.94), round(power_ema_decay(1000, 6.94), 4)
    (0.0, 0.9921)
    """
    t = max(float(updates), 1.0)
    return float((1.0 - 1.0 / t) ** (exponent + 1.0))


def power_profile_inner_product(
    updates_a: np.ndarray, std_a: np.ndarray, updates_b: np.ndarray, std_b: np.ndarray
) -> np.ndarray:
    """⟨p_a, p_b⟩ = ∫ p(τ; t_a, γ_a) p(τ; t_b, γ_b) dτ for power profiles p(τ; t, γ) = (γ+1)/t (τ/t)^γ on [0, t].

    With t_a ≤ t_b the integral runs over [0, t_a] and equals
    (γ_a+1)(γ_b+1) / (γ_a+γ_b+1) · (t_a/t_b)^γ_b / t_b (and symmetrically).

    Args:
        updates_a: snapshot times t_a of the first profiles (all arguments broadcast together).
        std_a: their σ_rel.
        updates_b: snapshot times t_b of the second profiles.
        std_b: their σ_rel.

    Returns:
        float64 array of the broadcast shape.

    Example:
    >>> float(power_profile_inner_product(10.0, 0.1, 10.0, 0.1)) > 0
    True
    """
    t_a, t_b = np.asarray(updates_a, "float64"), np.asarray(updates_b, "float64")
    gamma_a, gamma_b = std_to_exponent(std_a), std_to_exponent(std_b)
    shorter_first = t_a <= t_b
    ratio = np.where(shorter_first, t_a / t_b, t_b / t_a)
    exponent = np.where(shorter_first, gamma_b, gamma_a)
    longer = np.maximum(t_a, t_b)
    return (gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1) * ratio**exponent / longer


def posthoc_coefficients(
    snapshot_updates: Sequence[float], snapshot_stds: Sequence[float], target_updates: float, target_std: float
) -> np.ndarray:
    """Weights x of the snapshots whose profiles best match the target profile (least squares, Σx = 1).

    Solves A x = b with A_ij = ⟨p_i, p_j⟩ and b_i = ⟨p_i, p_target⟩ (the
    normal equations of min ‖Σ x_i p_i − p_target‖²), then rescales x to sum
    to 1 so the result is an average of weights.

    Args:
        snapshot_updates: t_i of each snapshot (its update count, > 0).
        snapshot_stds: σ_rel of the EMA in each snapshot.
        target_updates: the time of the EMA to reconstruct (usually the last snapshot's).
        target_std: its σ_rel.

    Returns:
        float64 coefficients, one per snapshot.

    Example:
    >>> x = posthoc_coefficients([100, 100], [0.05, 0.10], 100, 0.10)
    >>> [round(float(v), 6) + 0.0 for v in x]  # + 0.0: no "-0.0"
    [0.0, 1.0]
    """
    t = np.asarray(snapshot_updates, "float64").reshape(-1)
    stds = np.broadcast_to(np.asarray(snapshot_stds, "float64"), t.shape)
    if len(t) == 0 or np.any(t <= 0):
        raise ValueError(f"Need at least one snapshot, each after > 0 updates; received updates {t.tolist()}.")
    gram = power_profile_inner_product(t[:, None], stds[:, None], t[None, :], stds[None, :])
    target = power_profile_inner_product(t, stds, float(target_updates), float(target_std))
    coefficients = np.linalg.lstsq(gram, target, rcond=None)[0]
    return coefficients / np.sum(coefficients)


def reconstruct(
    snapshots: Sequence[tuple[int, float, Sequence[np.ndarray]]], target_std: float, target_updates: int | None = None
) -> list[np.ndarray]:
    """The EMA weights of σ_rel `target_std` at `target_updates`, combined from EMA snapshots.

    Args:
        snapshots: `(updates, std, weights)` per snapshot: the update count at
            which it was taken, the σ_rel of its EMA and that EMA's weight
            arrays (the same structure in every snapshot).
        target_std: σ_rel of the EMA to reconstruct.
        target_updates: its time; default the latest snapshot's. Only
            snapshots taken at or before it are used.

    Returns:
        One float32 array per weight.

    Example:
    >>> ones, twos = [np.ones(3)], [np.full(3, 2.0)]
    >>> reconstruct([(100, 0.05, ones), (100, 0.10, twos)], target_std=0.10)[0].tolist()
    [2.0, 2.0, 2.0]
    """
    if not snapshots:
        raise ValueError("No EMA snapshots to reconstruct from.")
    latest = max(updates for updates, _, _ in snapshots)
    target_updates = latest if target_updates is None else int(target_updates)
    used = [snapshot for snapshot in snapshots if snapshot[0] <= target_updates]
    if not used:
        raise ValueError(f"No snapshot was taken at or before update {target_updates}.")
    coefficients = posthoc_coefficients([u for u, _, _ in used], [s for _, s, _ in used], target_updates, target_std)
    result = [np.zeros(np.shape(w), "float64") for w in used[0][2]]
    for coefficient, (_, _, weights) in zip(coefficients, used):
        for total, weight in zip(result, weights):
            total += coefficient * np.asarray(weight, "float64")
    return [total.astype("float32") for total in result]
