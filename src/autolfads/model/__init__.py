"""The LFADS model, one module per concept: population layers, recurrent cell, encoder, decoder,
priors, reconstructions and augmentations; `lfads.py` puts them together."""

from .lfads import LFADS, LFADSOutput
from .population import MemberRNG
from .reconstruction import RECONSTRUCTIONS, Reconstruction

__all__ = ["LFADS", "LFADSOutput", "MemberRNG", "RECONSTRUCTIONS", "Reconstruction"]
