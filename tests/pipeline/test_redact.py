"""Redacting credentials out of data URLs before they are logged, stored or tracked."""

from __future__ import annotations

import pytest

from artifacts.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:pw@host/a.csv", "https://***@host/a.csv"),
        ("https://token@host:8443/a.csv", "https://***@host:8443/a.csv"),
        ("https://host/a.csv?token=abc&rows=5", "https://host/a.csv?token=***&rows=5"),
        (
            "https://b.s3.amazonaws.com/a.csv?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff"
            "&X-Amz-Security-Token=tt&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/a.csv?X-Amz-Credential=***&X-Amz-Signature=***"
            "&X-Amz-Security-Token=***&X-Amz-Expires=60",
        ),
        (
            "https://acct.blob.core.windows.net/c/a.csv?sv=2020&sig=xyz",
            "https://acct.blob.core.windows.net/c/a.csv?sv=2020&sig=***",
        ),
        (
            "https://host/a.csv?api_key=1&apikey=2&password=3&client_secret=4&auth=5",
            "https://host/a.csv?api_key=***&apikey=***&password=***&client_secret=***&auth=***",
        ),
        ("https://host/a.csv#access_token=abc", "https://host/a.csv#access_token=***"),
        ("https://host/a.csv?rows=5&sort=asc", "https://host/a.csv?rows=5&sort=asc"),
        ("data/diamonds.parquet", "data/diamonds.parquet"),
        ("file:///data/a.csv", "file:///data/a.csv"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
