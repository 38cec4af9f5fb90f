"""The samplers' exact error on Gaussian data (no network error), per sampler, NFE and data std.

Usage:
    python benchmarks/sampler_accuracy.py                       # the table of docs/lab_notes.md
    python benchmarks/sampler_accuracy.py --nfe 10,20 --stds 0.3 --samplers dpmpp_3m,ddim:trailing

Each sampler is driven by the exact denoiser of N(0.2, s²) data (the model's [-1, 1] space,
linear β, T = 1000) through `kd.metrics.gaussian_sampler_error`; the printed value is the
relative error of the sample std (mean error in brackets when it exceeds 0.5 %). A sampler is
given as `name` (its default spacing), `name:spacing` or `name:setting=value` (`dpmpp_2m_sde:eta=0.25`). Step counts are chosen so that the
network evaluations (NFE) match the column: Heun uses (NFE + 1) / 2 levels, rounded up, and says
its true NFE when it differs. Deterministic samplers are exact; stochastic ones (ddpm, sde, pc)
use 200,000 values (±0.2 % noise). This is arithmetic on a few numbers, seconds on any machine.
"""

import argparse
import math

import keras_diffusion as kd

DEFAULT_SAMPLERS = (
    "dpmpp_3m,dpmpp_2m,dpmpp_2m:karras,dpmpp_2m_sde,dpmpp_2m_sde:noise_sigma_min=0,"
    "heun,euler,ddim,ddim:leading,ddpm,ddpm:logsnr"
)


def parse_sampler(text: str) -> tuple[str, kd.samplers.Sampler]:
    """`name`, `name:spacing` or `name:setting=value[:...]` (e.g. `dpmpp_2m_sde:eta=0.25`): a label and the sampler."""
    name, *parts = text.split(":")
    settings = {}
    for part in parts:
        key, equals, value = part.partition("=")
        settings.update({key: float(value)} if equals else {"spacing": part})
    sampler = kd.samplers.get_sampler(name, **settings)
    extra = "".join(f", {k} {v:g}" for k, v in settings.items() if k != "spacing")
    return f"{name} ({sampler.spacing}{extra})", sampler


def steps_for(sampler: kd.samplers.Sampler, nfe: int) -> int:
    """Levels that spend about `nfe` network evaluations."""
    return max(1, math.ceil((nfe + 1) / 2)) if sampler.name == "heun" else nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS, help="comma-separated name or name:spacing")
    parser.add_argument("--nfe", default="10,15,20,25,50", help="network evaluations per image")
    parser.add_argument("--stds", default="0.1,0.3,0.6", help="data standard deviations s")
    parser.add_argument("--mean", type=float, default=0.2, help="data mean")
    args = parser.parse_args()
    budgets = [int(n) for n in args.nfe.split(",")]
    stds = [float(s) for s in args.stds.split(",")]
    print(f"Relative error of the sample std, data N({args.mean:g}, s²), exact denoiser, linear β, T = 1000; "
          f"cells: s = {' / '.join(f'{s:g}' for s in stds)}")  # fmt: skip
    print("| sampler (spacing) | " + " | ".join(f"NFE {n}" for n in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for text in args.samplers.split(","):
        label, sampler = parse_sampler(text)
        cells = []
        for nfe in budgets:
            steps = steps_for(sampler, nfe)
            errors = [kd.metrics.gaussian_sampler_error(sampler, steps, std, mean=args.mean) for std in stds]
            cell = " / ".join(
                f"{e.std_error:+.1%}" + (f" (mean {e.mean_error:+.1%})" if abs(e.mean_error) > 0.005 else "")
                for e in errors
            )
            if errors[0].function_evaluations != nfe:
                cell += f" [{errors[0].function_evaluations} NFE]"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
