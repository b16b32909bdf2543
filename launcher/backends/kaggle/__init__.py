"""Kaggle backend: each attempt is one session of a private script kernel (see ``backend``)."""
