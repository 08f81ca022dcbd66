"""Keys: pseudonyms (keyed HMAC), authenticated encryption, per-contact data keys.

The key file (``GATEWAY_KEY_FILE``) holds a pseudonym key and versioned master keys; it is
never stored in the database. Master keys encrypt the vault of phone numbers, session
state and the per-contact data keys; a contact's data key encrypts their free text, so
erasing that one wrapped key makes their text unreadable in every backup.

Ciphertext is text: ``<scheme><version>.<base64url(nonce || AES-256-GCM ciphertext)>``,
``m`` for the master key of that version, ``d`` for a data key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway.keys")

FORMAT = "dannaya-keys"
NONCE_BYTES = 12
KEY_BYTES = 32
PSEUDONYM_HEX = 32  # 128 bits of HMAC-SHA-256


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii"))


def _seal(aead: AESGCM, prefix: str, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return f"{prefix}.{_b64(nonce + aead.encrypt(nonce, plaintext, aad))}"


def _open(aead: AESGCM, blob: str, aad: bytes) -> bytes:
    raw = _unb64(blob)
    return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)


@dataclass
class KeyRing:
    pseudonym_version: int
    pseudonym_key: bytes = field(repr=False)
    master_current: int
    masters: dict[int, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        self._aeads = {v: AESGCM(k) for v, k in self.masters.items()}
        self._mac_key = hmac.new(self.pseudonym_key, b"dannaya/dedupe", hashlib.sha256).digest()

    # --- pseudonyms and MACs ---

    def pseudonym(self, e164: str) -> str:
        """The keyed-HMAC pseudonym of a normalised E.164 number."""
        digest = hmac.new(self.pseudonym_key, e164.encode("ascii"), hashlib.sha256)
        return digest.hexdigest()[:PSEUDONYM_HEX]

    def mac(self, *parts: str) -> str:
        """A keyed digest for deduplication keys: equal inputs, equal digests; nothing
        readable. Used where free text must be compared without being stored."""
        msg = "\x00".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    # --- master-key encryption ---

    def seal(self, plaintext: bytes, *, aad: str) -> str:
        v = self.master_current
        return _seal(self._aeads[v], f"m{v}", plaintext, aad.encode())

    def open(self, token: str, *, aad: str) -> bytes:
        scheme, _, blob = token.partition(".")
        if not scheme.startswith("m") or not scheme[1:].isdigit():
            raise ValueError("not a master-key ciphertext")
        aead = self._aeads.get(int(scheme[1:]))
        if aead is None:
            raise KeyError(f"master key version {scheme[1:]} is not in the key file")
        return _open(aead, blob, aad.encode())

    def master_version_of(self, token: str) -> int:
        return int(token.partition(".")[0][1:])

    def seal_text(self, text: str, *, aad: str) -> str:
        return self.seal(text.encode("utf-8", "surrogatepass"), aad=aad)

    def open_text(self, token: str, *, aad: str) -> str:
        return self.open(token, aad=aad).decode("utf-8", "surrogatepass")

    # --- per-contact data keys ---

    def new_data_key(self, *, pseudonym: str) -> str:
        """A fresh data key, returned wrapped under the current master key."""
        return self.seal(secrets.token_bytes(KEY_BYTES), aad=f"dk:{pseudonym}")

    def rewrap(self, wrapped: str, *, pseudonym: str) -> str:
        key = self.open(wrapped, aad=f"dk:{pseudonym}")
        return self.seal(key, aad=f"dk:{pseudonym}")

    def encrypt_for(self, wrapped: str, text: str, *, pseudonym: str, aad: str) -> str:
        key = self.open(wrapped, aad=f"dk:{pseudonym}")
        return _seal(AESGCM(key), "d1", text.encode("utf-8", "surrogatepass"), aad.encode())

    def decrypt_for(self, wrapped: str, token: str, *, pseudonym: str, aad: str) -> str:
        key = self.open(wrapped, aad=f"dk:{pseudonym}")
        return _open(AESGCM(key), token.partition(".")[2], aad.encode()).decode(
            "utf-8", "surrogatepass"
        )


def _new_file_data() -> dict[str, object]:
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pseudonym": {"version": 1, "key": _b64(secrets.token_bytes(KEY_BYTES))},
        "master": {"current": 1, "keys": {"1": _b64(secrets.token_bytes(KEY_BYTES))}},
    }


def _write(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parse(path: Path, raw: dict[str, object]) -> KeyRing:
    try:
        if raw.get("format") != FORMAT:
            raise ValueError("not a Dannaya key file")
        pseudo = raw["pseudonym"]
        master = raw["master"]
        assert isinstance(pseudo, dict) and isinstance(master, dict)
        masters = {int(v): _unb64(k) for v, k in master["keys"].items()}
        ring = KeyRing(int(pseudo["version"]), _unb64(pseudo["key"]), int(master["current"]),
                       masters)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise KeyFileError(f"{path}: malformed key file ({exc.__class__.__name__})") from None
    if len(ring.pseudonym_key) != KEY_BYTES or any(len(k) != KEY_BYTES for k in masters.values()):
        raise KeyFileError(f"{path}: keys must be {KEY_BYTES} bytes")
    if ring.master_current not in masters:
        raise KeyFileError(f"{path}: current master key {ring.master_current} missing")
    return ring


def load(path: Path, *, create: bool) -> KeyRing:
    """Read the key file; with ``create`` (development), make one if it is missing."""
    if not path.exists():
        if not create:
            raise KeyFileError(
                f"key file {path} not found; production refuses to start without its keys "
                "(set GATEWAY_KEY_FILE, or restore the file from your key backup)"
            )
        _write(path, _new_file_data())
        log.warning("created a new key file at %s: back it up; without it, encrypted data "
                    "and pseudonyms cannot be read", path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: malformed key file")
    return _parse(path, raw)


def add_master_version(path: Path) -> int:
    """Add a new master key and make it current; old versions stay to read old data."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    _parse(path, raw)
    keys = raw["master"]["keys"]
    version = max(int(v) for v in keys) + 1
    keys[str(version)] = _b64(secrets.token_bytes(KEY_BYTES))
    raw["master"]["current"] = version
    _write(path, raw)
    return version
