"""API keys (stored as hashes) and tenant secrets (encrypted at rest)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_PREFIX = "nk_"
ACTION_TOKEN_TTL = timedelta(days=30)  # a button stays usable this long after it was sent


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
    return hmac.compare_digest(expected.encode(), signature.encode())


def _keys(key: str) -> list[str]:
    """``NUDGE_SECRET_KEY`` holds one key, or several comma-separated: newest first."""
    keys = [part.strip() for part in key.split(",") if part.strip()]
    if not keys:
        raise ValueError("NUDGE_SECRET_KEY is empty")
    return keys


def _derived(key: str, purpose: bytes) -> bytes:
    """A key for one purpose only, so a key leaked from one use opens nothing else."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key.encode())


class SecretBox:
    """Encrypts tenant secrets and channel credentials before they reach the database.

    With several keys (``new,old``) the newest encrypts and every one decrypts, so the key
    can be rotated: add the new key in front, run ``nudge secrets rotate``, then drop the old.
    """

    def __init__(self, key: str) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in _keys(key)])

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted: NUDGE_SECRET_KEY changed?") from exc

    def reseal(self, token: str) -> str:
        """The same secret, encrypted with the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted: NUDGE_SECRET_KEY changed?") from exc


class ActionTokens:
    """Signed, tenant-bound tokens carried by card buttons' URLs (`/v1/actions/{token}`).

    Each carries its expiry (``e``, unix seconds); they are signed with a key derived for
    this purpose from the newest secret key, and verified with any of the keys.
    """

    def __init__(self, key: str, ttl: timedelta = ACTION_TOKEN_TTL) -> None:
        self._keys = [_derived(k, b"nudge action tokens") for k in _keys(key)]
        self._ttl = ttl

    def issue(self, claims: dict[str, str]) -> str:
        expires = int(time.time() + self._ttl.total_seconds())
        payload = json.dumps({**claims, "e": str(expires)}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._signature(self._keys[0], body)}"

    def verify(self, token: str) -> dict[str, str] | None:
        """The claims of a token this server issued, or None for anything else (expired
        tokens included: check ``expired``)."""
        body, _, signature = token.partition(".")
        if not body or not any(
            # As bytes: compare_digest refuses non-ASCII text, and a token is anyone's input.
            hmac.compare_digest(signature.encode(), self._signature(key, body).encode())
            for key in self._keys
        ):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
            return None
        return claims

    @staticmethod
    def expired(claims: dict[str, str], now: float | None = None) -> bool:
        expires = claims.get("e", "")
        return not expires.isdigit() or int(expires) < (time.time() if now is None else now)

    @staticmethod
    def _signature(key: bytes, body: str) -> str:
        digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
