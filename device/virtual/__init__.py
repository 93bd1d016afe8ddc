"""A protocol-faithful virtual ADB device on 127.0.0.1, backed by a sandbox folder."""
from .daemon import Faults, VirtualDevice

__all__ = ["Faults", "VirtualDevice"]
