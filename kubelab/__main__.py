"""Entry point: ``python -m kubelab demo [--keep]``."""

import sys

from kubelab.demo import main

sys.exit(main(sys.argv[1:]))
