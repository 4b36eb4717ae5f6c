"""A person at a browser, played by `requests`: open Microsoft's (the sandbox's) page, fill in the
form, press a button, and read where the browser is sent next."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin, urlsplit

import requests

FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def press(page_url: str, username: str, button: str = "accept", password: str = "sandbox") -> str:
    """GET the sign-in/consent page, POST its form; returns the redirect Location."""
    with requests.Session() as browser:
        page = browser.get(page_url, timeout=10, allow_redirects=False)
        assert page.status_code == 200, page.text[:500]
        form = {unescape(k): unescape(v) for k, v in FIELD.findall(page.text)}
        form.update(username=username, password=password, action=button)
        answer = browser.post(page_url.split("?")[0], data=form, timeout=10, allow_redirects=False)
    assert answer.status_code == 302, answer.text[:500]
    return urljoin(page_url, answer.headers["Location"])


def local_path(url: str) -> str:
    """Our callback URL as the Django test client wants it (path and query)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
