"""Keys: pseudonyms (keyed HMAC), authenticated encryption, per-contact data keys, and the
record of erasures.

The key file (``GATEWAY_KEY_FILE``) is never stored in the database. It holds:

- the pseudonym key (HMAC-SHA-256 of the E.164 number; never rotated in place: every stop
  flag, vote and tombstone keys on the pseudonyms it makes);
- versioned **master keys**, which seal what is kept about a resident only briefly: USSD
  session and SMS conversation state, and the numbers in queued messages (``m<version>.``).
  They are shredded after erasures (below), the live rows sealed again under a new
  version first, so **nothing long-lived may be sealed under them**;
- **data-wrapping keys** in 256 *buckets* (a contact's bucket: the first two hex digits of
  its pseudonym), each bucket versioned on its own. They wrap each contact's own random
  data key (``k<version>.``), and that data key seals everything lasting about the contact:
  their typed text (``d1.``) and their phone number in the vault (``n1.``);
- the **erasure record**: which pseudonyms were erased, and when. A database restore cannot
  reach it, so the purge after a restore erases them again (the tombstones in the database
  are restored along with everything else);
- while a shred runs, what it shreds, so that a run killed half-way is resumed rather than
  begun again (the file does not grow with failed runs).

Erasing a contact deletes their wrapped data key, vault row and transient state from the
database; an older dump still holds them. So the next purge records the erasure here and
*shreds*: the erased contact's bucket gets a new data-wrapping version that wraps every live
data key of that bucket, the master keys get a new version that seals every live transient
row, then the older versions are destroyed. From then on no dump taken before the shred has
that contact's number, text or state read with the current key file. Contacts in other
buckets keep theirs readable in older dumps: restoring one loses the numbers and text of the
buckets shredded since it was taken (about 1/256 of contacts per erasure), not everyone's.

Key files made before buckets have one global data-wrapping family (``data``, ``w<v>.``):
the next purge adds the buckets and moves live data keys into them, and the first shred
destroys the global family.

Ciphertext is text: ``<scheme><version>.<base64url(nonce || AES-256-GCM ciphertext)>``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway.privacy.keys")

FORMAT = "dannaya-keys"
NONCE_BYTES = 12
KEY_BYTES = 32
PSEUDONYM_HEX = 32  # 128 bits of HMAC-SHA-256
BUCKETS = tuple(f"{i:02x}" for i in range(256))
_BUCKET_SET = frozenset(BUCKETS)

T = TypeVar("T")


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed."""


class KeyGone(Exception):
    """The key version a ciphertext needs is no longer in the key file (shredded)."""


class DataKeyShredded(KeyGone):
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


def bucket_of(pseudonym: str) -> str:
    """The data-wrapping bucket of a contact: its pseudonym's first two hex digits."""
    head = pseudonym[:2].lower()
    if head in _BUCKET_SET:
        return head
    return hashlib.sha256(pseudonym.encode("utf-8")).hexdigest()[:2]


def as_utc(value: datetime) -> datetime:
    """An aware UTC time (SQLite hands times back naive, in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class Family:
    """Versions of one key; ``current`` seals, every version opens."""

    current: int
    keys: dict[int, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        self.aeads = {v: AESGCM(k) for v, k in self.keys.items()}


@dataclass(frozen=True)
class Shredding:
    """A shred under way: the first version it made current for each bucket (and for the
    master keys); every version below goes when it finishes."""

    buckets: Mapping[str, int]
    master: int
    legacy: bool  # the global data-wrapping family of older key files goes too


@dataclass
class KeyRing:
    pseudonym_version: int
    pseudonym_key: bytes = field(repr=False)
    master: Family
    buckets: dict[str, Family]
    legacy: Family | None = None  # key files made before buckets
    erased: dict[str, datetime] = field(default_factory=dict, repr=False)
    shredding: Shredding | None = None
    source: Path | None = None  # the key file, re-read when it changes
    stamp: tuple[int, int] = (0, 0)  # its modification time and inode when read

    def __post_init__(self) -> None:
        self._mac_key = hmac.new(self.pseudonym_key, b"dannaya/dedupe", hashlib.sha256).digest()

    @property
    def master_current(self) -> int:
        return self.master.current

    def refresh(self) -> None:
        """Pick up versions another process added or shredded (a cheap stat when not)."""
        if self.source is None:
            return
        try:
            stamp = _file_stamp(self.source)
        except OSError:
            return
        if stamp == self.stamp:
            return
        fresh = load(self.source, create=False)
        if not hmac.compare_digest(fresh.pseudonym_key, self.pseudonym_key):
            log.error("the key file's pseudonym key changed under a running gateway; "
                      "keeping the one it started with")
            return
        self.master, self.buckets, self.legacy = fresh.master, fresh.buckets, fresh.legacy
        self.erased, self.shredding = fresh.erased, fresh.shredding
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

    # --- master keys: brief state ---

    def _master(self, version: int) -> AESGCM:
        aead = self.master.aeads.get(version)
        if aead is None:
            self.refresh()
            aead = self.master.aeads.get(version)
        if aead is None:
            raise KeyGone(f"master key version {version} is not in the key file")
        return aead

    def master_alive(self, token: str) -> bool:
        """Whether a master-key ciphertext can still be opened with the key file."""
        try:
            version = version_of(token)
        except ValueError:
            return False
        if not token.startswith("m"):
            return False
        if version not in self.master.aeads:
            self.refresh()
        return version in self.master.aeads

    def seal(self, plaintext: bytes, *, aad: str) -> str:
        self.refresh()  # never seal under a version a shred is about to destroy
        v = self.master.current
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

    def _wrapping(self, wrapped: str, pseudonym: str, *, refresh: bool = True) -> AESGCM:
        if refresh:  # a shred elsewhere must not leave destroyed keys in this process
            self.refresh()
        version = version_of(wrapped)
        if wrapped.startswith("k"):
            family: Family | None = self.buckets.get(bucket_of(pseudonym))
        elif wrapped.startswith("w"):
            family = self.legacy
        else:
            raise ValueError("not a wrapped data key")
        aead = family.aeads.get(version) if family is not None else None
        if aead is None:
            raise DataKeyShredded(f"data-wrapping key version {version} was shredded")
        return aead

    def _wrap(self, key: bytes, pseudonym: str) -> str:
        family = self.buckets.get(bucket_of(pseudonym))
        if family is not None:
            return _seal(family.aeads[family.current], f"k{family.current}", key,
                         f"dk:{pseudonym}".encode())
        assert self.legacy is not None  # _parse checks a key file has one or the other
        return _seal(self.legacy.aeads[self.legacy.current], f"w{self.legacy.current}", key,
                     f"dk:{pseudonym}".encode())

    def new_data_key(self, *, pseudonym: str) -> str:
        """A fresh data key, returned wrapped under its bucket's current version."""
        self.refresh()  # never wrap under a version being shredded
        return self._wrap(secrets.token_bytes(KEY_BYTES), pseudonym)

    def data_key_alive(self, wrapped: str, *, pseudonym: str, refresh: bool = True) -> bool:
        """Whether the key file can still unwrap this data key. ``refresh=False`` skips
        looking at the key file first (a walk over every contact refreshes once)."""
        try:
            self._wrapping(wrapped, pseudonym, refresh=refresh)
        except (KeyGone, ValueError):
            return False
        return True

    def wrapped_current(self, wrapped: str, *, pseudonym: str) -> bool:
        """Whether the data key is wrapped under its bucket's current version."""
        family = self.buckets.get(bucket_of(pseudonym))
        return family is not None and wrapped.startswith(f"k{family.current}.")

    def _data_key(self, wrapped: str, pseudonym: str) -> bytes:
        return _open(self._wrapping(wrapped, pseudonym), wrapped.partition(".")[2],
                     f"dk:{pseudonym}".encode())

    def rewrap(self, wrapped: str, *, pseudonym: str) -> str:
        """The same data key, wrapped under its bucket's current version."""
        return self._wrap(self._data_key(wrapped, pseudonym), pseudonym)

    def encrypt_for(self, wrapped: str, text: str, *, pseudonym: str, aad: str) -> str:
        key = self._data_key(wrapped, pseudonym)
        return _seal(AESGCM(key), "d1", text.encode("utf-8", "surrogatepass"), aad.encode())

    def decrypt_for(self, wrapped: str, token: str, *, pseudonym: str, aad: str) -> str:
        key = self._data_key(wrapped, pseudonym)
        return _open(AESGCM(key), token.partition(".")[2], aad.encode()).decode(
            "utf-8", "surrogatepass"
        )

    # --- the vault: a contact's number, under their own data key ---

    def seal_number(self, wrapped: str, e164: str, *, pseudonym: str) -> str:
        """A vault entry: the number sealed with the contact's data key (``wrapped``)."""
        key = self._data_key(wrapped, pseudonym)
        return _seal(AESGCM(key), "n1", e164.encode("ascii"), f"vault:{pseudonym}".encode())

    def open_number(self, wrapped: str | None, token: str, *, pseudonym: str) -> str:
        """The number in a vault entry. Raises ``KeyGone`` when it can no longer be read
        (its contact was erased and shredded, or it came back from an older dump)."""
        aad = f"vault:{pseudonym}"
        if token.startswith("m"):  # sealed before numbers moved under data keys
            return self.open_text(token, aad=aad)
        if wrapped is None:
            raise DataKeyShredded("the contact has no data key")
        key = self._data_key(wrapped, pseudonym)
        return _open(AESGCM(key), token.partition(".")[2], aad.encode()).decode("ascii")


# --- the key file --------------------------------------------------------------------


def _new_key() -> str:
    return _b64(secrets.token_bytes(KEY_BYTES))


def _new_buckets() -> dict[str, Any]:
    return {b: {"current": 1, "keys": {"1": _new_key()}} for b in BUCKETS}


def _new_file_data() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pseudonym": {"version": 1, "key": _new_key()},
        "master": {"current": 1, "keys": {"1": _new_key()}},
        "buckets": _new_buckets(),
        "erased": {},
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _family(raw: Mapping[str, Any]) -> Family:
    return Family(int(raw["current"]), {int(v): _unb64(k) for v, k in raw["keys"].items()})


def _file_stamp(path: Path) -> tuple[int, int]:
    """What changes whenever the file is rewritten: each write replaces it (a new inode),
    even within the clock's resolution."""
    info = path.stat()
    return info.st_mtime_ns, info.st_ino


def _parse(path: Path, raw: dict[str, Any], stamp: tuple[int, int]) -> KeyRing:
    try:
        if raw.get("format") != FORMAT:
            raise ValueError("not a Dannaya key file")
        pseudo = raw["pseudonym"]
        master = _family(raw["master"])
        buckets = {str(b): _family(f) for b, f in raw.get("buckets", {}).items()}
        legacy = _family(raw["data"]) if "data" in raw else None
        erased = {str(p): as_utc(datetime.fromisoformat(t))
                  for p, t in raw.get("erased", {}).items()}
        marker = raw.get("shredding")
        shredding = None if marker is None else Shredding(
            {str(b): int(v) for b, v in marker["buckets"].items()}, int(marker["master"]),
            bool(marker["legacy"]))
        ring = KeyRing(int(pseudo["version"]), _unb64(pseudo["key"]), master, buckets,
                       legacy, erased, shredding, source=path, stamp=stamp)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: malformed key file ({exc.__class__.__name__})") from None
    families = [master, *buckets.values(), *([legacy] if legacy else [])]
    every = [ring.pseudonym_key, *(k for f in families for k in f.keys.values())]
    if any(len(k) != KEY_BYTES for k in every):
        raise KeyFileError(f"{path}: keys must be {KEY_BYTES} bytes")
    if any(f.current not in f.keys for f in families):
        raise KeyFileError(f"{path}: a current key version is missing")
    if buckets and set(buckets) != _BUCKET_SET:
        raise KeyFileError(f"{path}: malformed key file (buckets)")
    if not buckets and legacy is None:
        raise KeyFileError(f"{path}: malformed key file (no data-wrapping keys)")
    return ring


def _read(path: Path) -> tuple[dict[str, Any], tuple[int, int]]:
    try:
        stamp = _file_stamp(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: malformed key file")
    return raw, stamp


def missing_message(path: Path) -> str:
    return (f"key file {path} not found; production refuses to start without its keys "
            "(set GATEWAY_KEY_FILE, or restore the file from your key backup)")


def load(path: Path, *, create: bool) -> KeyRing:
    """Read the key file; with ``create`` (development), make one if it is missing."""
    if not path.exists():
        if not create:
            raise KeyFileError(missing_message(path))
        with _locked(path):
            if not path.exists():
                _write(path, _new_file_data())
                log.warning("created a new key file at %s: back it up; without it, encrypted "
                            "data and pseudonyms cannot be read", path)
    raw, stamp = _read(path)
    return _parse(path, raw, stamp)


def write_new(path: Path) -> None:
    """Create a new key file at ``path`` (which must not exist), mode 0600."""
    if path.exists():
        raise KeyFileError(f"key file {path} already exists")
    _write(path, _new_file_data())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Every change to the key file is made under one lock: processes sharing the file
    (replicas, a worker, a command) never lose each other's changes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _update(path: Path, change: Callable[[dict[str, Any]], T]) -> T:
    """Apply ``change`` to the key file's contents under the lock; the file is written
    only if they changed."""
    with _locked(path):
        raw, stamp = _read(path)
        _parse(path, raw, stamp)
        before = json.dumps(raw, sort_keys=True)
        result = change(raw)
        if json.dumps(raw, sort_keys=True) != before:
            _parse(path, raw, stamp)  # never write a file that would not load
            _write(path, raw)
        return result


def _bump(family: dict[str, Any]) -> int:
    version = max(int(v) for v in family["keys"]) + 1
    family["keys"][str(version)] = _new_key()
    family["current"] = version
    return version


def add_master_version(path: Path) -> int:
    """Add a master key and make it current; old versions stay to read old data."""
    return _update(path, lambda raw: _bump(raw["master"]))


def ensure_buckets(path: Path) -> bool:
    """Give a key file made before buckets its 256 data-wrapping buckets (True if added).
    Data keys wrapped under the older global family stay readable until moved."""
    def change(raw: dict[str, Any]) -> bool:
        if raw.get("buckets"):
            return False
        raw["buckets"] = _new_buckets()
        raw.setdefault("erased", {})
        return True

    return _update(path, change)


def rotate_versions(path: Path) -> tuple[int, int]:
    """Add a master version and a version to every bucket, all made current; older versions
    stay. Returns the new master version and the highest bucket version."""
    def change(raw: dict[str, Any]) -> tuple[int, int]:
        if not raw.get("buckets"):
            raw["buckets"] = _new_buckets()
        master = _bump(raw["master"])
        highest = max(_bump(raw["buckets"][b]) for b in BUCKETS)
        return master, highest

    return _update(path, change)


def _stamp(when: datetime) -> str:
    return as_utc(when).isoformat(timespec="microseconds")


def begin_shred(path: Path, *, buckets: Iterable[str],
                erased: Mapping[str, datetime] | None = None) -> Shredding:
    """Record ``erased`` and start a shred of ``buckets`` (and of the master keys): each
    gets a new current version. A shred already under way is carried on, not begun again:
    only buckets it did not cover get a version."""
    wanted = set(buckets)

    def change(raw: dict[str, Any]) -> Shredding:
        if not raw.get("buckets"):
            raw["buckets"] = _new_buckets()
        record = raw.setdefault("erased", {})
        for pseudonym, when in (erased or {}).items():
            old = record.get(pseudonym)
            if old is None or as_utc(datetime.fromisoformat(old)) < as_utc(when):
                record[pseudonym] = _stamp(when)
        marker = raw.get("shredding")
        if marker is None:
            marker = {"buckets": {}, "master": _bump(raw["master"]), "legacy": "data" in raw}
        for bucket in sorted(wanted - set(marker["buckets"])):
            marker["buckets"][bucket] = _bump(raw["buckets"][bucket])
        raw["shredding"] = marker
        return Shredding(dict(marker["buckets"]), int(marker["master"]), bool(marker["legacy"]))

    return _update(path, change)


def finish_shred(path: Path) -> int:
    """Destroy every version the shred under way replaced; how many keys went."""
    def change(raw: dict[str, Any]) -> int:
        marker = raw.pop("shredding", None)
        if marker is None:
            return 0
        dropped = 0
        families = [(raw["master"], int(marker["master"]))]
        families += [(raw["buckets"][b], int(v)) for b, v in marker["buckets"].items()]
        for family, first in families:
            old = [v for v in family["keys"] if int(v) < first]
            for v in old:
                del family["keys"][v]
            dropped += len(old)
        if marker["legacy"] and "data" in raw:
            dropped += len(raw.pop("data")["keys"])
        return dropped

    return _update(path, change)
