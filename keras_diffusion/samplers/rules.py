"""Reverse-process update rules: one short pure function per equation, in the model's scaling.

A noise level is a (possibly fractional) timestep t and its ᾱ; x is always in
the model's own scaling, x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, and after the last level
comes ᾱ = 1, the data. Each rule takes the network's (x̂_0, ε̂) at the current
level and returns x at the next one.
"""

from keras import ops


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """σ_t(η) = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t'}) (DDIM eq. 16, Song et al. 2021).

    η = 1 gives the DDPM posterior standard deviation, η = 0 a deterministic sampler.
    """
    return eta * ops.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(x_t, x0, eps, alpha_bar_t, alpha_bar_prev, noise, eta=0.0):
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ²) ε̂ + σ z (DDIM eq. 12; the thesis' eq. 19)."""
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = ops.sqrt(ops.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0))
    return ops.sqrt(alpha_bar_prev) * x0 + direction * eps + sigma * noise


def ddpm_step(x_t, x0, eps, alpha_bar_t, alpha_bar_prev, noise, variance="small"):
    """Ancestral step: x_{t'} ~ q(x_{t'} | x_t, x̂_0) (DDPM eq. 6-7; the thesis' eq. 12-13).

    With β' = 1 - ᾱ_t/ᾱ_{t'} (β_t itself for consecutive steps, the respaced β
    of Nichol & Dhariwal otherwise) the mean is
    √ᾱ_{t'} β'/(1-ᾱ_t) x̂_0 + √(1-β') (1-ᾱ_{t'})/(1-ᾱ_t) x_t and the variance is
    β̃ = β' (1-ᾱ_{t'})/(1-ᾱ_t) (`variance="small"`) or β' (`"large"`, DDPM's
    other choice). The last step (ᾱ_{t'} = 1) adds no noise. `eps` is unused.
    """
    beta = 1.0 - alpha_bar_t / alpha_bar_prev
    mean = (ops.sqrt(alpha_bar_prev) * beta * x0 + ops.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) * x_t) / (
        1.0 - alpha_bar_t
    )
    if variance == "small":
        step_variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    else:
        step_variance = ops.where(alpha_bar_prev < 1.0, beta, 0.0)
    return mean + ops.sqrt(step_variance) * noise


def euler_step(x_t, eps, alpha_bar_t, alpha_bar_next):
    """One Euler step of the probability-flow ODE dx̃/dσ = ε̂ in x̃ = x/√ᾱ (Karras et al. 2022, Alg. 1).

    x̃_{t'} = x̃_t + (σ_{t'} − σ_t) ε̂, σ = √((1-ᾱ)/ᾱ); returned in the model's scaling √ᾱ_{t'} x̃_{t'}.
    (With ε-prediction this is algebraically DDIM with η = 0 at the same levels.)
    """
    sigma, sigma_next = _sigma(alpha_bar_t), _sigma(alpha_bar_next)
    return ops.sqrt(alpha_bar_next) * (x_t / ops.sqrt(alpha_bar_t) + (sigma_next - sigma) * eps)


def heun_step(x_t, eps, eps_euler, alpha_bar_t, alpha_bar_next):
    """Heun's correction (Karras et al. 2022, Alg. 1 lines 9-11): the trapezoid of ε̂ at both ends.

    `eps_euler` is ε̂ evaluated at the Euler prediction `euler_step(...)`;
    x̃_{t'} = x̃_t + (σ_{t'} − σ_t) (ε̂ + ε̂')/2.
    """
    return euler_step(x_t, 0.5 * (eps + eps_euler), alpha_bar_t, alpha_bar_next)


def dpmpp_2m_step(x_t, x0, x0_previous, alpha_bar_t, alpha_bar_next, ratio, second_order):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the model's scaling.

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ) and h = λ_{t'} − λ_t:
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} (e^{−h} − 1) D, where D = x̂_0 (first
    order) or D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0^{prev} with r = h_prev/h
    (second order, from the previous step's x̂_0). `second_order` is 0 or 1.
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    exp_minus_h = (sigma_next * alpha_t) / (alpha_next * sigma_t)  # finite (0) at the data, where h = ∞
    correction = second_order * (x0 - x0_previous) / (2.0 * ratio)
    return (sigma_next / sigma_t) * x_t - alpha_next * (exp_minus_h - 1.0) * (x0 + correction)


def dpmpp_2m_sde_step(x_t, x0, x0_previous, alpha_bar_t, alpha_bar_next, ratio, second_order, noise, eta=1.0):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, the solver of the reverse SDE; midpoint form) in the model's scaling.

    With α, σ, λ, h and D as in `dpmpp_2m_step`, each step solves the linear
    part of the reverse SDE exactly and adds the noise it injects:
    x_{t'} = (σ_{t'}/σ_t) e^{−h} x_t + α_{t'} (1 − e^{−2h}) D + σ_{t'} √(1 − e^{−2h}) z.
    First order (D = x̂_0) it is the DDPM posterior step q(x_{t'} | x_t, x̂_0);
    the last step (σ_{t'} = 0) returns D, adding no noise. With `eta` = η
    in [0, 1] a fraction of that noise (k-diffusion's η, the SDE whose noise
    is scaled by η between the sampling ODE and the reverse SDE):
    x_{t'} = (σ_{t'}/σ_t) e^{−ηh} x_t + α_{t'} (1 − e^{−(1+η)h}) D + σ_{t'} √(1 − e^{−2ηh}) z,
    which is `dpmpp_2m_step` at η = 0 and the line above at η = 1; D's
    correction keeps the midpoint form (x̂_0 − x̂_0^{prev})/(2r). `eta` may
    be a tensor (one value per step, as `DPMSolverPlusPlus2MSDESampler` uses it).
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    exp_minus_h = (sigma_next * alpha_t) / (alpha_next * sigma_t)
    exp_minus_eta_h = exp_minus_h**eta  # e^{−ηh}; at the data (h = ∞) 0, or 1 for η = 0 (0⁰), both exact there
    correction = second_order * (x0 - x0_previous) / (2.0 * ratio)
    return (
        (sigma_next / sigma_t) * exp_minus_eta_h * x_t
        + alpha_next * (1.0 - exp_minus_h * exp_minus_eta_h) * (x0 + correction)
        + sigma_next * ops.sqrt(ops.maximum(1.0 - exp_minus_eta_h**2, 0.0)) * noise
    )


def dpmpp_3m_step(x_t, x0, x0_previous, x0_before, alpha_bar_t, alpha_bar_next, h, r0, r1, order):
    """DPM-Solver++(3M) (Lu et al. 2022, multistep, third order) in the model's scaling.

    With φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1, φ₃ = φ₂/h − ½ and the divided
    differences of the last three x̂_0 (steps h, r₀h, r₁h back in λ):
    D₁⁰ = (x̂_0 − x̂_0^{prev})/r₀, D₁¹ = (x̂_0^{prev} − x̂_0^{before})/r₁,
    D₁ = D₁⁰ + r₀/(r₀+r₁) (D₁⁰ − D₁¹), D₂ = (D₁⁰ − D₁¹)/(r₀+r₁),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ x̂_0 + α_{t'} (φ₂ D₁ − φ₃ D₂)   (order 3),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ (x̂_0 + D₁⁰/2)                   (order 2, as `dpmpp_2m_step`),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ x̂_0                            (order 1, DDIM).
    `order` is 1, 2 or 3; h, r₀ and r₁ must be finite (any value where the order does not use them).
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    phi1 = (sigma_next * alpha_t) / (alpha_next * sigma_t) - 1.0  # e^{−h} − 1, finite (−1) at the data
    d1_recent = (x0 - x0_previous) / r0
    d1_older = (x0_previous - x0_before) / r1
    d1 = d1_recent + r0 / (r0 + r1) * (d1_recent - d1_older)
    d2 = (d1_recent - d1_older) / (r0 + r1)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    third = alpha_next * (phi2 * d1 - phi3 * d2)
    second = -alpha_next * phi1 * 0.5 * d1_recent
    first = (sigma_next / sigma_t) * x_t - alpha_next * phi1 * x0
    use_second = ops.cast(order == 2, x_t.dtype)
    use_third = ops.cast(order == 3, x_t.dtype)
    return first + use_second * second + use_third * third


def euler_maruyama_step(x_t, eps, alpha_bar_t, alpha_bar_next, noise):
    """Reverse-time Euler–Maruyama for the VP-SDE dx = −½β(s)x ds + √β(s) dw (Song et al. 2021, eq. 6).

    The reverse SDE is dx = [−½βx − β ∇log p_s(x)] ds + √β dw̄, with the score
    ∇log p_t(x) = −ε̂/√(1-ᾱ_t). Over a step, ∫β ds = log(ᾱ_{t'}/ᾱ_t) =: Δ, so
    x_{t'} = x_t + Δ (½ x_t + ∇log p) + √Δ z.
    """
    delta = ops.log(alpha_bar_next / alpha_bar_t)
    score = -eps / ops.sqrt(1.0 - alpha_bar_t)
    return x_t + delta * (0.5 * x_t + score) + ops.sqrt(delta) * noise


def langevin_corrector_step(x_t, eps, alpha_bar_t, alpha, noise, snr):
    """One Langevin MCMC step at a fixed noise level (Song et al. 2021, Alg. 5, VP form).

    x ← x + δ ∇log p_t(x) + √(2δ) z, with δ = 2α (snr ‖z‖ / ‖∇log p_t‖)² per
    sample, so the signal-to-noise ratio of the update is `snr`.
    """
    score = -eps / ops.sqrt(1.0 - alpha_bar_t)
    axes = tuple(range(1, len(x_t.shape)))
    noise_norm = ops.sqrt(ops.sum(ops.square(noise), axis=axes, keepdims=True))
    score_norm = ops.sqrt(ops.sum(ops.square(score), axis=axes, keepdims=True))
    step_size = 2.0 * alpha * ops.square(snr * noise_norm / ops.maximum(score_norm, 1e-12))
    return x_t + step_size * score + ops.sqrt(2.0 * step_size) * noise


def _sigma(alpha_bar):
    return ops.sqrt((1.0 - alpha_bar) / alpha_bar)
