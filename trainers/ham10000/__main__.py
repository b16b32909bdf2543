"""``python -m trainers.ham10000 [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.ham10000.train import main

sys.exit(run_main(main, name="ham10000"))
