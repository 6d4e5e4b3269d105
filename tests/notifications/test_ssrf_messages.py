"""A refused webhook URL says what this hub accepts: https only in production, http too where
private targets are allowed (development and tests)."""

from __future__ import annotations

import pytest

from services.notifications.ssrf import TargetRefused, parse


@pytest.mark.parametrize("url", ["ftp://example.org/hook", "ws://example.org/hook"])
def test_where_http_is_allowed_a_refusal_says_so(url):
    with pytest.raises(TargetRefused) as refused:
        parse(url, allow_private=True)
    assert "http://" in str(refused.value) and "https://" in str(refused.value)
    assert "not accepted" not in str(refused.value)
    assert parse("http://127.0.0.1:9000/hook", allow_private=True) == ("http", "127.0.0.1", 9000)


@pytest.mark.parametrize("url", ["http://example.org/hook", "ftp://example.org/hook"])
def test_where_only_https_is_allowed_a_refusal_says_http_is_not(url):
    with pytest.raises(TargetRefused) as refused:
        parse(url, allow_private=False)
    message = str(refused.value)
    assert message.startswith("the URL must start with https://")
    assert "http:// is not accepted here" in message
