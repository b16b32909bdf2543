"""Chest X-ray report generation with a curriculum by report content (``tasks/xr2text.yaml``)."""
