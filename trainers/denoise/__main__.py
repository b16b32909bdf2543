"""``python -m trainers.denoise [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.denoise.train import main

sys.exit(run_main(main, name="denoise"))
