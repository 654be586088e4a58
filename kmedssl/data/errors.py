"""The one error type raised for unreadable or inconsistent input data."""


class DataError(ValueError):
    """Raised for unreadable or inconsistent input; the message names the file and the problem."""
