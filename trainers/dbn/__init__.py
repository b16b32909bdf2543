"""Binary latent diffusion with one conditional RBM per timestep (``python -m trainers.dbn``): a
binary autoencoder turns CIFAR-10 images of one class into bit codes, a chain of bit flips
noises them, and an RBM per timestep learns to undo one step. See ``train.py``."""
