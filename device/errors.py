"""One error base class for everything that talks to a device."""
from __future__ import annotations


class DeviceError(Exception):
    """A device operation failed. The message names the device and the step."""

    exit_code = 3

    def __init__(self, device: str, step: str, message: str):
        self.device, self.step = device, step
        super().__init__(f"{device}: {step}: {message}")


class StorageFull(DeviceError):
    """The device has no room for a file: retrying cannot help."""


class DeviceTimeout(DeviceError):
    exit_code = 4


class AuthRefused(DeviceError):
    exit_code = 5
