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

`WeightAverages` keeps the EMAs of a network during training (one
traditional EMA with a warm-up, or one power-function EMA per σ_rel) as
variables of the model that owns them, so they are saved with it.
"""

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_diffusion.runtime.initializers import Zeros


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
            EMA starts at the weights); a number, or a float tensor inside a
            compiled step.
        exponent: γ.

    Returns:
        β_t in [0, 1): a float for a number, a tensor for a tensor.

    Example:
    >>> power_ema_decay(1, 6.94), round(power_ema_decay(1000, 6.94), 4)
    (0.0, 0.9921)
    """
    if isinstance(updates, (int, float, np.number)):
        return float((1.0 - 1.0 / max(float(updates), 1.0)) ** (exponent + 1.0))
    return ops.power(1.0 - 1.0 / ops.maximum(updates, 1.0), exponent + 1.0)


def warmup_ema_decay(updates, decay: float):
    """min(decay, (1 + k) / (10 + k)) after k updates: a traditional EMA whose first updates are not
    dominated by the initial weights (the decay of `DiffusionModel(ema_decay=...)`).

    Args:
        updates: k, a number or a float tensor.
        decay: the decay reached after the warm-up, in [0, 1).

    Returns:
        The decay of this update, of `updates`' kind.

    Example:
    >>> warmup_ema_decay(0, 0.999), warmup_ema_decay(10_000, 0.999)
    (0.1, 0.999)
    """
    if isinstance(updates, (int, float, np.number)):
        return min(decay, (1.0 + updates) / (10.0 + updates))
    return ops.minimum(decay, (1.0 + updates) / (10.0 + updates))


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


class WeightAverages:
    """The EMAs of a network's trainable weights, kept as non-trainable variables of the model that owns them.

    Either one traditional EMA (`decay`, with the warm-up of
    `warmup_ema_decay`) or one power-function EMA per σ_rel in `stds` (EDM2,
    β_t of `power_ema_decay`); none when both are None. The variables are
    added to `owner` (so they are saved and loaded with it): a step counter
    `ema_step`, then one copy of every trainable weight per EMA, named
    `ema_<i>`, `ema1_<i>`, .... Each starts at the network's weights.

    Args:
        owner: the layer or model that owns the variables.
        network: the network whose `trainable_variables` are averaged.
        decay: the traditional EMA's decay in [0, 1), or None.
        stds: σ_rel of the power-function EMAs (replacing `decay`), or empty.

    Example:
    >>> owner = keras.layers.Layer()
    >>> network = keras.layers.Dense(2)
    >>> network.build((None, 3))
    >>> averages = WeightAverages(owner, network, decay=0.5)
    >>> averages.update(); averages.update()
    >>> averages.updates, len(averages.values())
    (1, 2)
    """

    def __init__(self, owner: keras.layers.Layer, network: keras.layers.Layer, decay: float | None, stds: Sequence[float] = ()):
        self.network = network
        self.decay = decay
        self.exponents = tuple(float(std_to_exponent(std)) for std in stds)
        self.step = owner.add_weight(shape=(), dtype="int32", initializer=Zeros(), trainable=False, name="ema_step")
        count = len(self.exponents) or (1 if decay is not None else 0)
        self.sets = [self._copy_weights(owner, "ema" if k == 0 else f"ema{k}") for k in range(count)]

    def _copy_weights(self, owner, prefix: str) -> list:
        copies = []
        for index, variable in enumerate(self.network.trainable_variables):
            copy = owner.add_weight(
                shape=variable.shape, dtype=variable.dtype, initializer=Zeros(), trainable=False, name=f"{prefix}_{index}"
            )
            # A copy through the host: a new buffer (JAX must not see one twice), and no XLA program per shape.
            copy.assign(ops.convert_to_numpy(variable.value))
            copies.append(copy)
        return copies

    def update(self) -> None:
        """ema ← ema + (1 − β)(θ − ema) for every EMA, then one more step (inside the training step)."""
        step = ops.cast(self.step, "float32")
        if not self.sets:
            decays = []
        elif self.exponents:
            decays = [power_ema_decay(step, exponent) for exponent in self.exponents]
        else:
            decays = [warmup_ema_decay(step, self.decay)] * len(self.sets)
        for decay, averages in zip(decays, self.sets):
            rate = 1.0 - decay  # once per EMA, not per variable: fewer operations to trace
            for average, variable in zip(averages, self.network.trainable_variables):
                weights = variable.value if variable.dtype == average.dtype else ops.cast(variable, average.dtype)
                average.assign_add(rate * (ops.stop_gradient(weights) - average))
        self.step.assign_add(1)

    @property
    def updates(self) -> int:
        """t of the averaging profile: the updates behind the newest weights folded in (the step − 1)."""
        return max(int(ops.convert_to_numpy(self.step)) - 1, 0)

    def values(self, index: int = 0) -> list[np.ndarray]:
        """The `index`-th EMA's weights as NumPy arrays, in `network.trainable_variables` order."""
        return [ops.convert_to_numpy(v) for v in self._set(index)]

    def assign(self, weights: Sequence[np.ndarray], index: int = 0) -> None:
        """Overwrites the `index`-th EMA with `weights` (one array per trainable variable)."""
        variables = self._set(index)
        shapes = [tuple(np.shape(w)) for w in weights]
        if shapes != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"Expected {len(variables)} arrays shaped like the network's trainable variables; received "
                f"{len(shapes)} with shapes {shapes[:3]}{'...' if len(shapes) > 3 else ''}."
            )
        for variable, weight in zip(variables, weights):
            variable.assign(np.asarray(weight, dtype=variable.dtype))

    def _set(self, index: int) -> list:
        if not self.sets:
            raise ValueError("This model keeps no EMA (ema_decay=None and no ema_std).")
        if not 0 <= int(index) < len(self.sets):
            raise ValueError(f"EMA index {index} out of range: the model keeps {len(self.sets)} EMA(s).")
        return self.sets[int(index)]
