from __future__ import annotations

import pytest

from m10jobs.redact import redact, register_secret


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgresql://m10:p4ssw0rd@db:5432/x failed", "p4ssw0rd"),
        ("host=db user=m10 password=p4ssw0rd dbname=x", "p4ssw0rd"),
        ("host=db password='p4ss w0rd' dbname=x", "p4ss w0rd"),
        ("redis://:r3dispw@cache:6379/0", "r3dispw"),
        ('{"aws_secret_access_key": "AKsecretKEY"}', "AKsecretKEY"),
    ],
)
def test_patterns_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_registered_values_are_masked_anywhere() -> None:
    register_secret("tr0ub4dor&3")
    assert redact("error near 'tr0ub4dor&3'") == "error near '***'"


def test_plain_text_is_untouched() -> None:
    text = "lock reclaim_gc held by host:1:abc; token 5"
    assert redact(text) == text
