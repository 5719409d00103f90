"""Errors a user can fix, and hiding secrets in what they say.

The CLI shows a UserError as one line, without a traceback, and exits 1. Messages name URLs
(databases, MLflow, the service) so the user knows which one failed: `mask_url` keeps the URL
readable and drops its password, `mask_urls` does that for every URL in a text, and `reason`
for the message of an exception.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
# scheme://anything-but-space: database and HTTP URLs alike, wherever they sit in a text.
URL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "token", "key", "sig")


class UserError(Exception):
    """A problem the user can fix (bad config, bad data, missing model); the message says how."""

    # What a client of the service may be told: no paths or URLs (the server log has the rest).
    public = "a setting or file of the service needs fixing"


def mask_url(url: str) -> str:
    """`url` without its password (and without query values that look like secrets):
    postgresql://ml:s3cret@db/log -> postgresql://ml:***@db/log."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (e.g. a bad port): hide everything but the scheme
        return f"{url.split('://', 1)[0]}://{MASK}" if "://" in url else url
    masked = url
    if password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        masked = masked.replace(parts.netloc, f"{user.split(':', 1)[0]}:{MASK}@{host}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, MASK if any(s in k.lower() for s in SECRET_PARAMS) else v) for k, v in pairs]
        masked = masked.replace(f"?{parts.query}", f"?{urlencode(query, safe='*')}", 1)
    return masked


def mask_urls(text: str) -> str:
    """`text` with every URL in it masked by `mask_url`."""
    return URL_PATTERN.sub(lambda match: mask_url(match.group()), text)


def reason(exc: BaseException) -> str:
    """What went wrong, for a log line or a message: a database's own words (without
    SQLAlchemy's statement dump), every URL in them masked."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return mask_urls(text.splitlines()[0] if text else type(exc).__name__)
