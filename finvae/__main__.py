"""``python -m finvae ...``: the ``finvae`` command line (:mod:`finvae.cli`)."""

import sys

from finvae.cli import main

if __name__ == "__main__":
    sys.exit(main())
