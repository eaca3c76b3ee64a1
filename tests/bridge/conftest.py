"""Shared bridge fixtures: one web identity (RSA keygen is slow) and a secret per session."""

import os

import pytest

from firmware.bridge import webcert


@pytest.fixture(scope="session")
def web_identity(tmp_path_factory):
    """(key_path, cert_path) of a snakeoil-shaped bridge certificate."""
    d = tmp_path_factory.mktemp("bridge-identity")
    return webcert.write_web_identity(str(d))


@pytest.fixture
def secret():
    return os.urandom(32)
