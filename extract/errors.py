class ExtractError(Exception):
    """Bad input to extract; the message names the file or option and the fix."""


class WeightsUnavailable(ExtractError):
    """The requested network weights cannot be loaded."""
