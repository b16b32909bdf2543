"""``python -m trainers.xr2text [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.xr2text.train import main

sys.exit(run_main(main, name="xr2text"))
