"""`python -m keras_diffusion`: the `keras-diffusion` command line (see `keras_diffusion.cli`)."""

import sys

from keras_diffusion.cli import main

if __name__ == "__main__":
    sys.exit(main())
