"""autolfads: LFADS latent-dynamics models with AutoLFADS population-based training."""

__version__ = "0.1.0"
