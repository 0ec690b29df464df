"""Server-issued request ids: a served list's id carries an HMAC of (request, campaign, arm, user, time).

Only the server, holding ``api.request_secret``, can mint an id that verifies, so feedback
(``rec_impression``, ``rec_click``, goal events with a ``request_id``) can only name lists the
API really served, to the user it served them to. The id is
``r1.<base64url msgpack [campaign_id, arm, ts_ms, nonce]>.<base64url HMAC-SHA256[:16]>``; the
MAC also covers the user id, which the id does not carry; a list served without a user id is
bound to none (any user's feedback may name it, still once per list and within its window). Verifying
needs no state, so every worker and replica sharing the secret checks ids of the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

from operators.settings import REQUEST_SECRET_MIN_BYTES

__all__ = ["IssuedRequest", "RequestSigner", "load_request_secret", "names_campaign_list"]

_VERSION = "r1"
_MAC_BYTES = 16
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(tuple[str, str, int, bytes])


@dataclass(frozen=True, slots=True)
class IssuedRequest:
    """What a verified request id says: the campaign, the arm and when (epoch s) the list was served."""

    campaign_id: str
    arm: str
    ts: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RequestSigner:
    """Mints and verifies request ids under one secret.

    Parameters
    ----------
    secret : bytes
        At least 16 bytes; every API process that verifies ids of another needs the same one.

    Examples
    --------
    >>> s = RequestSigner(b"0" * 32)
    >>> rid = s.issue("home", "emde", "u1", 1_700_000_000.0)
    >>> s.verify(rid, "u1")
    IssuedRequest(campaign_id='home', arm='emde', ts=1700000000.0)
    >>> s.verify(rid, "u2")
    'does not verify for this user_id (forged, altered or issued to another user)'
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < REQUEST_SECRET_MIN_BYTES:
            raise ValueError(f"request_secret: at least {REQUEST_SECRET_MIN_BYTES} bytes; got {len(secret)}")
        self._secret = secret
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per id: the key is hashed once

    def _mac(self, payload: bytes, user_id: str | None) -> bytes:
        h = self._keyed.copy()
        h.update(payload + b"\x00" + (user_id or "").encode())
        return h.digest()[:_MAC_BYTES]

    def issue(self, campaign_id: str, arm: str, user_id: str | None, ts: float) -> str:
        """A fresh id for a list served at ``ts`` (epoch s) to ``user_id`` (None: anonymous)."""
        payload = _enc.encode((campaign_id, arm, round(ts * 1000), secrets.token_bytes(8)))
        return f"{_VERSION}.{_b64(payload)}.{_b64(self._mac(payload, user_id))}"

    def verify(self, request_id: str, user_id: str | None) -> IssuedRequest | str:
        """The list ``request_id`` names if it was issued by this secret to ``user_id``; else why not."""
        parts = _payload_and_mac(request_id)
        if isinstance(parts, str):
            return parts
        payload, mac = parts
        if not (hmac.compare_digest(mac, self._mac(payload, user_id))
                or hmac.compare_digest(mac, self._mac(payload, None))):  # served without a user id
            return "does not verify for this user_id (forged, altered or issued to another user)"
        try:
            campaign_id, arm, ts_ms, _nonce = _dec.decode(payload)
        except msgspec.DecodeError:  # only reachable with the secret: a bug, not an attack
            return "not a request id issued by this API (bad payload)"
        return IssuedRequest(campaign_id, arm, ts_ms / 1000.0)


def names_campaign_list(request_id: str) -> bool:
    """Whether ``request_id`` reads as an id of a campaign's list, without verifying it (no secret:
    the API verified it when it accepted the event). Lists served without a campaign are never
    published on ``served``, so feedback naming one can never be attributed and is not parked. An id
    of another form (a shop's own producer) counts as a campaign list: it may still arrive."""
    parts = _payload_and_mac(request_id)
    if isinstance(parts, str):
        return True
    try:
        return bool(_dec.decode(parts[0])[0])
    except msgspec.DecodeError:
        return True


def _payload_and_mac(request_id: str) -> tuple[bytes, bytes] | str:
    """The decoded payload and MAC of a request id of this API's form (not verified); else why not."""
    parts = request_id.split(".")
    if len(parts) != 3 or parts[0] != _VERSION or len(request_id) > 1024:
        return "not a request id issued by this API (use the request_id of a served list)"
    try:
        return _unb64(parts[1]), _unb64(parts[2])
    except (ValueError, TypeError):
        return "not a request id issued by this API (bad encoding)"


def load_request_secret(configured: str | None, state_dir: Path) -> bytes:
    """The configured secret, else one kept in ``state_dir/request_secret`` (created once, mode 0600).

    Several workers on one host share the file; replicas on other hosts need the same configured
    ``api.request_secret`` (``FUSIONREC_API__REQUEST_SECRET``).
    """
    if configured:
        return configured.encode()
    path = state_dir / "request_secret"
    if not path.exists():  # written aside, then linked: another worker never reads a half-written key
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".request_secret.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_bytes().strip()
    if len(secret) < REQUEST_SECRET_MIN_BYTES:
        raise RuntimeError(f"{path}: holds {len(secret)} bytes; delete it (a new key is made) or set api.request_secret")
    return secret
