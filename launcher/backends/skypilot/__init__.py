"""SkyPilot: clouds, Kubernetes and Slurm through SkyPilot's SDK (an optional extra:
``pip install 'launch[skypilot]'``). ``client`` wraps the SDK, ``mapping`` turns our task into
SkyPilot's, ``backend`` maps its states onto ours, ``catalog`` prices candidates for ``launch plan``.
Nothing here imports ``sky`` at import time."""
