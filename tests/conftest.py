"""Shared pytest fixtures.

HTTP server fixtures (see tests/httpserver.py for the server's API):
  http_server   a started HTTPTestServer on 127.0.0.1 (plain HTTP)
  https_server  the same over TLS; REQUESTS_CA_BUNDLE points at its cert
Both make sure loopback traffic never goes through a proxy.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from httpserver import HTTPTestServer  # noqa: E402


def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(monkeypatch):
    """A started loopback HTTP server; stopped after the test."""
    _no_proxy(monkeypatch)
    server = HTTPTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def https_server(monkeypatch):
    """A started loopback HTTPS server whose certificate requests trusts."""
    _no_proxy(monkeypatch)
    server = HTTPTestServer(tls=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    try:
        yield server
    finally:
        server.stop()
