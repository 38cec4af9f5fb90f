"""The `keras-diffusion` command line: `train`, `sample` and `evaluate`, one module each.

Installed as the console script `keras-diffusion` (also `python -m keras_diffusion`).
Every command prints what it does, shows progress bars on long work, writes its
files atomically and exits with 0 on success, 1 with a one-line message when an
input is wrong (a missing file, labels out of range, ...) and 2 on a usage
error (an unknown option or a malformed value). Set `KERAS_DIFFUSION_DEBUG=1`
to see the full traceback instead of the one-line message.

Nothing in the library imports this module; it only uses the public API.

Example:
    keras-diffusion train mnist --preset tiny --epochs 3 --out runs/mnist
    keras-diffusion sample runs/mnist/model.keras --num 80 --labels 0,1,2,3,4,5,6,7,8,9 --guidance-scale 2
    keras-diffusion evaluate --model runs/mnist/model.keras --dataset mnist --num 2048
"""

import argparse
import os
import sys
from collections.abc import Sequence

import keras_diffusion as kd
from keras_diffusion.cli import evaluate, sample, train
from keras_diffusion.cli.common import (
    BACKEND_NOTE,
    DEBUG_ENV,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    PROGRAM,
    CommandLineError,
    HelpFormatter,
    available_samplers,
    load_diffusion_model,
)

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "CommandLineError", "available_samplers", "build_parser",
           "load_diffusion_model", "main"]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-diffusion` with its three sub-commands.

    Returns:
        An `argparse.ArgumentParser`.

    Example:
    >>> build_parser().parse_args(["sample", "model.keras", "--num", "4"]).num
    4
    """
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Train diffusion models, sample images from them and measure FID/KID.",
        epilog=BACKEND_NOTE + "\n\nRun `keras-diffusion COMMAND --help` for the options of a command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {kd.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(commands)
    sample.add_parser(commands)
    evaluate.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-diffusion` with `argv` (default `sys.argv[1:]`).

    Args:
        argv: the command-line arguments without the program name.

    Returns:
        The exit status: 0 success, 1 bad input (one line on stderr), 2 usage error.

    Example:
    >>> main(["--version"])  # doctest: +SKIP
    keras-diffusion 0.2.0.dev0
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help / --version (0) and usage errors (2)
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (CommandLineError, ValueError, OSError) as error:
        # The library's input checks raise ValueError with a message that names the fix.
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROGRAM} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROGRAM} {args.command}: interrupted", file=sys.stderr)
        return 130
