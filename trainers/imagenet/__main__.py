"""``python -m trainers.imagenet [flags]``; ``--help`` lists them."""

import sys

from trainers.common import run_main
from trainers.imagenet.train import main

sys.exit(run_main(main, name="imagenet"))
