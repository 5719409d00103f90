"""Errors a user can fix. The CLI shows them as one line, without a traceback, and exits 1."""


class UserError(Exception):
    """A problem the user can fix (bad config, bad data, missing model); the message says how."""
