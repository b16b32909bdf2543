"""Graph-diffusion patch denoiser on CIFAR-10 (``python -m trainers.denoise``), judged by PSNR and
SSIM against the noisy input, a fitted Gaussian blur, the bilateral filter and non-local means."""
