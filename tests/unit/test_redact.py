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


def test_dsn_passwords_raw_and_decoded() -> None:
    from m10jobs.redact import dsn_passwords

    assert dsn_passwords("postgresql://u:p%40s@h1:1,h2:2/db") == ["p%40s", "p@s"]
    assert dsn_passwords(r"host=db password='a b\'c' dbname=x") == ["a b'c"]
    assert dsn_passwords("https://h/x?api_token=t0k&user=u") == ["t0k"]
    assert dsn_passwords("postgresql://u@h/db") == []


def test_registered_value_is_masked_in_its_encoded_forms() -> None:
    import json

    register_secret('q"u%2Fote\\d')
    for text in ['q"u%2Fote\\d', 'q"u/ote\\d', json.dumps('q"u%2Fote\\d'), repr('q"u/ote\\d')]:
        assert "ote" not in redact(text), text


def test_short_values_are_not_registered_but_masked_as_key_values() -> None:
    register_secret("ab1")
    assert redact("lab1 x") == "lab1 x"
    assert redact("password=ab1 API_TOKEN=ab1") == "password=*** API_TOKEN=***"


@pytest.mark.parametrize(
    "name, secret",
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SESSION_TOKEN", True),
        ("PGPASSWORD", True),
        ("API_KEY", True),
        ("REDISCLI_AUTH", True),
        ("AWS_ACCESS_KEY_ID", False),
        ("PGPASSFILE", False),
        ("key_prefix", False),
        ("pass_env", False),
        ("DEPLOY_TARGET", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    from m10jobs.redact import looks_secret

    assert looks_secret(name) is secret


def test_an_error_naming_a_secret_key_keeps_its_words() -> None:
    text = "config stray_secret: unknown key; rollback.env.API_TOKEN: expected a string"
    assert redact(text) == text


def test_redact_obj_keeps_the_structure() -> None:
    from m10jobs.redact import redact_obj

    register_secret("true-secret-1")
    assert redact_obj({"a": ["x true-secret-1"], "b": True, "c": 3}) == {
        "a": ["x ***"],
        "b": True,
        "c": 3,
    }
