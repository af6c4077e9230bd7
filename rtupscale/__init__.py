"""rtupscale: real-time AI audio upscaler (x4 rate, codec-loss restoration)."""

__version__ = "0.1.0"

FACTOR = 4
"""Every path in rtupscale upsamples by exactly this factor."""
