"""``python -m trainers.quickstart [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.quickstart.train import main

sys.exit(run_main(main, name="quickstart"))
