"""The quickstart trainer: a small CNN on synthetic images, small enough for a CPU, complete
enough to show every part of the trainer contract (exact resume, preemption, metrics, dashboard)."""
