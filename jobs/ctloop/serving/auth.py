"""The serving API's bearer token: one secret shared by the slots and the traffic switch.

``CTLOOP_SERVING_TOKEN`` wins when set (Kubernetes passes it from a Secret); otherwise the token is
the content of ``CTLOOP_SERVING_TOKEN_FILE`` (default ``<state_dir>/serving/token``), which the local
stack creates once with mode 0600. An empty token is refused: the API never runs unauthenticated.
"""

from __future__ import annotations

import hmac
import os
import secrets

from ctloop.config.settings import Settings

SCHEME = "bearer"


class TokenError(ValueError):
    """No usable serving token: the message says where it was looked for."""


def load_token(settings: Settings) -> str:
    """The serving token from ``settings`` (the variable, else the file); raises TokenError if there is none."""
    token = settings.serving_token.get_secret_value().strip()
    if token:
        return token
    path = settings.serving_token_file
    assert path is not None  # filled in by Settings
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise TokenError(f"no serving token: CTLOOP_SERVING_TOKEN is unset and {path} does not exist "
                         "(`ctloop stack up` creates it; or set CTLOOP_SERVING_TOKEN_FILE)") from None
    if not token:
        raise TokenError(f"no serving token: {path} is empty")
    return token


def ensure_token(settings: Settings) -> str:
    """The serving token, creating the token file (mode 0600, a random 256-bit token) if there is none yet.

    The file appears whole or not at all (written aside, then hard-linked into place, which fails if it
    exists): of two processes racing, one creates it and both read the same token.
    """
    if settings.serving_token.get_secret_value().strip():
        return load_token(settings)
    path = settings.serving_token_file
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    return load_token(settings)


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``Bearer <token>`` (compared in constant time)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == SCHEME and hmac.compare_digest(value.strip().encode(), token.encode())
