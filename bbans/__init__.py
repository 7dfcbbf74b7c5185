"""bbans: lossless image compression with VAEs and bits-back ANS."""

__version__ = "0.1.0"
