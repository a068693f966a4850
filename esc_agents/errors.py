"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a missing file or field, a broken config, an unknown prompt name."""


class EndpointError(UserError):
    """An endpoint could not be reached, or kept failing after the retry budget."""
