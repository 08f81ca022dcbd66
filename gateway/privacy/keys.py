"""Keys: pseudonyms (keyed HMAC), authenticated encryption, per-contact data keys.

The key file (``GATEWAY_KEY_FILE``) is never stored in the database. It holds:

- the pseudonym key (HMAC-SHA-256 of the E.164 number; never rotated in place: every stop
  flag, vote and tombstone keys on the pseudonyms it makes);
- versioned **master keys**, which seal the vault of phone numbers, session and
  conversation state and the numbers in queued messages (``m<version>.``);
- versioned **data-wrapping keys**, which wrap each contact's own data key
  (``w<version>.``); that data key encrypts the contact's typed text (``d1.``).

Erasing a contact deletes their wrapped data key from the database. An older dump still
holds it, so after erasures the data-wrapping keys are *shredded*: a new version wraps
every live data key, then the old versions are deleted from the key file. From then on
no dump taken before the shred can have its typed text read with the current key file.

Ciphertext is text: ``<scheme><version>.<base64url(nonce || AES-256-GCM ciphertext)>``.
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
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway.privacy.keys")

FORMAT = "dannaya-keys"
NONCE_BYTES = 12
KEY_BYTES = 32
PSEUDONYM_HEX = 32  # 128 bits of HMAC-SHA-256


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed."""


class DataKeyShredded(Exception):
    """The data key was wrapped by a data-wrapping key that has been destroyed."""


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


def version_of(token: str) -> int:
    """The key version a ciphertext names (``m3.…`` → 3)."""
    scheme = token.partition(".")[0]
    if len(scheme) < 2 or not scheme[1:].isdigit():
        raise ValueError("not a versioned ciphertext")
    return int(scheme[1:])


@dataclass
class KeyRing:
    pseudonym_version: int
    pseudonym_key: bytes = field(repr=False)
    master_current: int
    masters: dict[int, bytes] = field(repr=False)
    wrap_current: int
    wraps: dict[int, bytes] = field(repr=False)
    source: Path | None = None  # the key file, re-read when it changes
    stamp: int = 0  # its modification time when read

    def __post_init__(self) -> None:
        self._masters = {v: AESGCM(k) for v, k in self.masters.items()}
        self._wraps = {v: AESGCM(k) for v, k in self.wraps.items()}
        self._mac_key = hmac.new(self.pseudonym_key, b"dannaya/dedupe", hashlib.sha256).digest()

    def refresh(self) -> None:
        """Pick up versions another process added or shredded (a cheap stat when not)."""
        if self.source is None:
            return
        try:
            stamp = self.source.stat().st_mtime_ns
        except OSError:
            return
        if stamp == self.stamp:
            return
        fresh = load(self.source, create=False)
        if not hmac.compare_digest(fresh.pseudonym_key, self.pseudonym_key):
            log.error("the key file's pseudonym key changed under a running gateway; "
                      "keeping the one it started with")
            return
        self.masters, self.wraps = fresh.masters, fresh.wraps
        self.master_current, self.wrap_current = fresh.master_current, fresh.wrap_current
        self._masters = {v: AESGCM(k) for v, k in self.masters.items()}
        self._wraps = {v: AESGCM(k) for v, k in self.wraps.items()}
        self.stamp = stamp

    # --- pseudonyms and MACs ---

    def pseudonym(self, e164: str) -> str:
        """The keyed-HMAC pseudonym of a normalised E.164 number."""
        digest = hmac.new(self.pseudonym_key, e164.encode("ascii"), hashlib.sha256)
        return digest.hexdigest()[:PSEUDONYM_HEX]

    def mac(self, *parts: str) -> str:
        """A keyed digest for deduplication keys: equal inputs, equal digests; nothing
        readable. Used where free text must be compared without being stored."""
        msg = "\x00".join(parts).encode("utf-8", "surrogatepass")
        # Keyed BLAKE2b is a MAC in its own right and a third the cost of HMAC-SHA-256.
        return hashlib.blake2b(msg, key=self._mac_key, digest_size=PSEUDONYM_HEX // 2).hexdigest()

    # --- master keys ---

    def _master(self, version: int) -> AESGCM:
        aead = self._masters.get(version)
        if aead is None:
            self.refresh()
            aead = self._masters.get(version)
        if aead is None:
            raise KeyError(f"master key version {version} is not in the key file")
        return aead

    def seal(self, plaintext: bytes, *, aad: str) -> str:
        v = self.master_current
        return _seal(self._master(v), f"m{v}", plaintext, aad.encode())

    def open(self, token: str, *, aad: str) -> bytes:
        if not token.startswith("m"):
            raise ValueError("not a master-key ciphertext")
        return _open(self._master(version_of(token)), token.partition(".")[2], aad.encode())

    def seal_text(self, text: str, *, aad: str) -> str:
        return self.seal(text.encode("utf-8", "surrogatepass"), aad=aad)

    def open_text(self, token: str, *, aad: str) -> str:
        return self.open(token, aad=aad).decode("utf-8", "surrogatepass")

    # --- per-contact data keys ---

    def _wrap(self, version: int) -> AESGCM:
        self.refresh()  # a shred elsewhere must not leave destroyed keys in this process
        aead = self._wraps.get(version)
        if aead is None:
            raise DataKeyShredded(f"data-wrapping key version {version} was shredded")
        return aead

    def new_data_key(self, *, pseudonym: str) -> str:
        """A fresh data key, returned wrapped under the current data-wrapping key."""
        self.refresh()  # never wrap under a version being shredded
        v = self.wrap_current
        return _seal(self._wrap(v), f"w{v}", secrets.token_bytes(KEY_BYTES),
                     f"dk:{pseudonym}".encode())

    def _data_key(self, wrapped: str, pseudonym: str) -> bytes:
        if not wrapped.startswith("w"):
            raise ValueError("not a wrapped data key")
        return _open(self._wrap(version_of(wrapped)), wrapped.partition(".")[2],
                     f"dk:{pseudonym}".encode())

    def rewrap(self, wrapped: str, *, pseudonym: str) -> str:
        """The same data key, wrapped under the current data-wrapping key."""
        key = self._data_key(wrapped, pseudonym)
        v = self.wrap_current
        return _seal(self._wrap(v), f"w{v}", key, f"dk:{pseudonym}".encode())

    def encrypt_for(self, wrapped: str, text: str, *, pseudonym: str, aad: str) -> str:
        key = self._data_key(wrapped, pseudonym)
        return _seal(AESGCM(key), "d1", text.encode("utf-8", "surrogatepass"), aad.encode())

    def decrypt_for(self, wrapped: str, token: str, *, pseudonym: str, aad: str) -> str:
        key = self._data_key(wrapped, pseudonym)
        return _open(AESGCM(key), token.partition(".")[2], aad.encode()).decode(
            "utf-8", "surrogatepass"
        )


# --- the key file --------------------------------------------------------------------


def _new_file_data() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pseudonym": {"version": 1, "key": _b64(secrets.token_bytes(KEY_BYTES))},
        "master": {"current": 1, "keys": {"1": _b64(secrets.token_bytes(KEY_BYTES))}},
        "data": {"current": 1, "keys": {"1": _b64(secrets.token_bytes(KEY_BYTES))}},
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _family(raw: dict[str, Any], name: str) -> tuple[int, dict[int, bytes]]:
    family = raw[name]
    keys = {int(v): _unb64(k) for v, k in family["keys"].items()}
    return int(family["current"]), keys


def _parse(path: Path, raw: dict[str, Any], stamp: int) -> KeyRing:
    try:
        if raw.get("format") != FORMAT:
            raise ValueError("not a Dannaya key file")
        pseudo = raw["pseudonym"]
        master_current, masters = _family(raw, "master")
        wrap_current, wraps = _family(raw, "data")
        ring = KeyRing(int(pseudo["version"]), _unb64(pseudo["key"]), master_current,
                       masters, wrap_current, wraps, source=path, stamp=stamp)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: malformed key file ({exc.__class__.__name__})") from None
    every = [ring.pseudonym_key, *masters.values(), *wraps.values()]
    if any(len(k) != KEY_BYTES for k in every):
        raise KeyFileError(f"{path}: keys must be {KEY_BYTES} bytes")
    if master_current not in masters or wrap_current not in wraps:
        raise KeyFileError(f"{path}: a current key version is missing")
    return ring


def _read(path: Path) -> tuple[dict[str, Any], int]:
    try:
        stamp = path.stat().st_mtime_ns
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: malformed key file")
    return raw, stamp


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
    raw, stamp = _read(path)
    return _parse(path, raw, stamp)


def write_new(path: Path) -> None:
    """Create a new key file at ``path`` (which must not exist), mode 0600."""
    if path.exists():
        raise KeyFileError(f"key file {path} already exists")
    _write(path, _new_file_data())


def _add_version(path: Path, family: str) -> int:
    raw, stamp = _read(path)
    _parse(path, raw, stamp)
    keys = raw[family]["keys"]
    version = max(int(v) for v in keys) + 1
    keys[str(version)] = _b64(secrets.token_bytes(KEY_BYTES))
    raw[family]["current"] = version
    _write(path, raw)
    return version


def add_master_version(path: Path) -> int:
    """Add a master key and make it current; old versions stay to read old data."""
    return _add_version(path, "master")


def add_wrap_version(path: Path) -> int:
    """Add a data-wrapping key and make it current."""
    return _add_version(path, "data")


def drop_wrap_versions(path: Path, *, keep: int) -> list[int]:
    """Destroy every data-wrapping key but version ``keep``: the shred."""
    raw, stamp = _read(path)
    _parse(path, raw, stamp)
    keys = raw["data"]["keys"]
    dropped = sorted(int(v) for v in keys if int(v) != keep)
    raw["data"] = {"current": keep, "keys": {str(keep): keys[str(keep)]}}
    _write(path, raw)
    return dropped
