"""Secret masking: every form in which a pipeline is likely to print a secret."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from secrets_app.masking import Masker

SECRET = 'p@ss/"word"+1=ok'
PEM = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----"


@pytest.mark.parametrize(
    "printed",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        json.dumps({"password": SECRET}),
        # Basic auth: the secret inside a longer base64 text, at any byte alignment.
        base64.b64encode(f"user:{SECRET}".encode()).decode(),
        base64.b64encode(f"us:{SECRET}".encode()).decode(),
        base64.b64encode(f"u:{SECRET}".encode()).decode(),
    ],
    ids=[
        "plain",
        "base64",
        "urlsafe-base64",
        "url-encoded",
        "form-encoded",
        "json",
        "basic-auth-0",
        "basic-auth-1",
        "basic-auth-2",
    ],
)
def test_each_form_of_a_secret_is_masked(printed):
    masked = Masker([SECRET])(f"before {printed} after")
    assert masked.startswith("before ") and masked.endswith(" after")
    assert "***" in masked
    for form in (SECRET, base64.b64encode(SECRET.encode()).decode()[:-4]):
        assert form not in masked


def test_each_line_of_a_multi_line_secret_is_masked():
    masker = Masker([PEM])
    assert masker("line: MIIEvQIBADANBgkqhkiG9w0B") == "line: ***"
    assert "AQEFAASCBKcwggSjAgEAAoIB" not in masker("AQEFAASCBKcwggSjAgEAAoIB!")
    assert masker(PEM) == "***"


def test_short_values_and_ordinary_text_are_left_alone():
    masker = Masker(["abc", "longer-secret"])
    assert masker("abc is too short to mask") == "abc is too short to mask"
    assert masker("nothing secret here") == "nothing secret here"
    assert not Masker([])
    assert Masker([])("text") == "text"
