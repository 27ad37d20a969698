"""The one exception the lab raises for failures of its own machinery."""


class LabError(RuntimeError):
    """Setting up, driving or tearing down the lab failed."""
