"""The embedded default backend: this machine, a local process per attempt."""
