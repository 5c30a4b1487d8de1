"""API keys (stored as hashes) and tenant secrets (encrypted at rest)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from cryptography.fernet import Fernet, InvalidToken

API_KEY_PREFIX = "nk_"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


SIGNATURE_TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The ``X-Nudge-Signature`` value for a webhook body sent at unix time ``at``:
    ``t=<at>,v1=<hex HMAC-SHA256 of "<at>.<body>">``. The timestamp is signed with the body,
    so a receiver can refuse an old request replayed to it."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def signature_is_valid(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the HMAC matches and the timestamp is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp, signature = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, body, int(timestamp)).split("v1=", 1)[1]
    return hmac.compare_digest(expected, signature)


class SecretBox:
    """Encrypts tenant secrets and channel credentials before they reach the database."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted: NUDGE_SECRET_KEY changed?") from exc


class ActionTokens:
    """Signed, tenant-bound tokens carried by card buttons' URLs (`/v1/actions/{token}`)."""

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"nudge-action-tokens:" + key.encode()).digest()

    def issue(self, claims: dict[str, str]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
        body = payload.decode().rstrip("=")
        return f"{body}.{self._signature(body)}"

    def verify(self, token: str) -> dict[str, str] | None:
        """The claims of a token this server issued, or None for anything else."""
        body, _, signature = token.partition(".")
        if not body or not hmac.compare_digest(signature, self._signature(body)):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None

    def _signature(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
