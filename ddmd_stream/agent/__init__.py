"""Outlier agent: encode recent frames with the newest CVAE, find latent outliers, publish them."""
