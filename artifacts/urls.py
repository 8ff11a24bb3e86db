"""Credentials out of URLs: what the pipeline logs, stores in metadata or sends to W&B."""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
# Query (and fragment) keys whose values are secrets: tokens, keys, passwords, signatures
# (S3 X-Amz-Signature/Credential/Security-Token, Azure SAS `sig`, GCS X-Goog-Signature).
_SECRET_KEY = re.compile(
    r"token|key|secret|passw|pwd|sig|credential|auth|session|jwt|bearer", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with ``user:password@`` and secret-looking query or fragment values replaced
    by ``***``; anything else (a plain path, a URL without secrets) unchanged."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            _redact_pairs(parts.query),
            _redact_pairs(parts.fragment),
        )
    )


def _redact_pairs(text: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***``, keeping every other byte as it was."""
    pairs = []
    for pair in text.split("&") if text else []:
        key, sep, _value = pair.partition("=")
        secret = sep and _SECRET_KEY.search(urllib.parse.unquote_plus(key))
        pairs.append(f"{key}={MASK}" if secret else pair)
    return "&".join(pairs)
