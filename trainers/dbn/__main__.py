"""``python -m trainers.dbn [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.dbn.train import main

sys.exit(run_main(main, name="dbn"))
