"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a missing file or field, a broken config, an unknown prompt name."""


class JobFailure(Exception):
    """One job (an episode, a future) failed for good; the run records it and goes on with the others."""


class EndpointError(UserError, JobFailure):
    """An endpoint could not be reached, or kept failing after the retry budget."""


class OfflineCacheMiss(UserError):
    """An offline replay needed a completion the cache does not hold. Not an EndpointError: it
    stops the run instead of failing one job, since every later job would miss the same way."""
