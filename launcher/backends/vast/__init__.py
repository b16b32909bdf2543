"""Vast.ai: rent an instance per attempt through the ``vastai`` SDK, run it over SSH (see backend.py)."""
