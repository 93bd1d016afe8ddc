"""Error types of the export pipeline.

`ConfigError` is bad user input (exit code 2, one line naming the field);
`ExportError` is a failed pipeline stage (exit code 1).
"""


class ExportError(RuntimeError):
    """A pipeline stage failed (load, quantize, export, lower, validate)."""

    exit_code = 1


class ConfigError(ExportError, ValueError):
    """User input is invalid. `field` is the dotted config field at fault."""

    exit_code = 2

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ValidationError(ExportError):
    """The written program disagrees with the eager model beyond tolerance."""
