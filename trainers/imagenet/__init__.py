"""The ImageNet trainer: ResNet-50 with adaptive sparse training (a selection pass scores every
sample; only the selected ones get forward and backward), resumable exactly after preemption.
See ``train.py`` for the loop and ``selection.py`` for the method."""
