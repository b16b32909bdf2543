"""Watching jobs: machine samples, alerts, stall detection, notifications, status and plots.

- ``sampler``: on the machine, GPUs through nvidia-ml-py and the run's CPU/RAM into ``gpu.jsonl``
- ``alerts``: a pure function of the samples and the training progress -> alerts
- ``monitor``: the supervisor's side (reads the store, raises alerts, detects a hung run)
- ``notify``: apprise notifications sent from a background thread
- ``plot``: one picture of a job from its store folder alone

Nothing here is imported by ``launch --help`` or ``launch status``; apprise, nvidia-ml-py,
matplotlib and rich are imported inside the functions that need them.
"""
