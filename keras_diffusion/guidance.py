"""Classifier-free guidance (Ho & Salimans 2022; the thesis' guidance weight w).

A class-conditional model trained with class dropout predicts both ε(x, c)
and ε(x, ∅) (the null class); `DiffusionModel.generate(guidance_scale=w)`
combines them with `classifier_free_guidance` at every step, whatever the
sampler.
"""


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
