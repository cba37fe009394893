"""Keys, the segmented AES-256-GCM stream, and manifest authentication.

The design follows Tink's AES-GCM-HKDF streaming AEAD: every archive gets its own key, derived with
HKDF-SHA256 from the backup key and a random salt, and its payload is sealed in fixed-size segments
whose nonce is ``prefix (7 bytes) || segment counter (4 bytes, big endian) || last flag (1 byte)``.
Because the counter and the last flag are inside the nonce, a reader detects a flipped bit, a
reordered or missing segment, a truncated file and appended bytes without holding the file in memory.

Key ids are derived from the key material, so an archive written with a different key is recognised
as such ("written with key k-3f9a..., which is not configured") rather than as generic corruption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.errors import KeyConfigError

KEY_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
MAX_SEGMENTS = 2**32

_ARCHIVE_INFO = b"bmc-pipeline archive v1"
_MANIFEST_INFO = b"bmc-pipeline manifest v1"
_KEY_ID_DOMAIN = b"bmc-pipeline key id v1\x00"
_BLOB_INFO = b"bmc-pipeline blob id v1"
_AUDIT_INFO = b"bmc-pipeline audit log v1"

HOW_TO_CREATE_KEY = (
    "create one with 'bmc-backup keygen --out backup.key' and set BMC_BACKUP_KEY_FILE=backup.key "
    "(or put the printed base64 key in BMC_BACKUP_KEY); keep a copy outside this machine: "
    "without it no backup can be read"
)


def key_id_for(material: bytes) -> str:
    """A short public name for a key: a domain-separated hash, so it reveals nothing of the key."""
    return "k-" + hashlib.sha256(_KEY_ID_DOMAIN + material).hexdigest()[:12]


@dataclass(frozen=True)
class Key:
    """One 256-bit backup key and its id."""

    material: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        if len(self.material) != KEY_SIZE:
            raise KeyConfigError(f"a backup key must be {KEY_SIZE} bytes, got {len(self.material)}")
        object.__setattr__(self, "key_id", key_id_for(self.material))


class KeyRing:
    """Several keys for rotation: the first encrypts, every one of them decrypts."""

    def __init__(self, keys: Sequence[Key]) -> None:
        if not keys:
            raise KeyConfigError(f"no backup key is configured: {HOW_TO_CREATE_KEY}")
        unique: dict[str, Key] = {}
        for k in keys:
            unique.setdefault(k.key_id, k)
        self._keys = unique
        self.primary = keys[0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def get(self, key_id: str, *, what: str = "this archive") -> Key:
        """The key with ``key_id``; a missing one is a key problem, not corruption."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyConfigError(
                f"{what} was written with key {key_id}, which is not in the configured key ring "
                f"({', '.join(self.key_ids)}); configure that key in BMC_BACKUP_KEY or "
                "BMC_BACKUP_KEY_FILE (old keys can stay listed after new ones)"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing({self.key_ids})"


def parse_keys(text: str, source: str) -> list[Key]:
    """Keys from text: base64 keys separated by newlines or commas; '#' starts a comment."""
    keys = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        for token in line.split("#", 1)[0].replace(",", " ").split():
            try:
                material = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                raise KeyConfigError(
                    f"{source}, line {lineno}: not a base64 key; {HOW_TO_CREATE_KEY}"
                ) from None
            if len(material) != KEY_SIZE:
                raise KeyConfigError(
                    f"{source}, line {lineno}: a key must decode to {KEY_SIZE} bytes, "
                    f"this one has {len(material)}; {HOW_TO_CREATE_KEY}"
                )
            keys.append(Key(material))
    return keys


def read_key_file(path: str | os.PathLike[str]) -> list[Key]:
    """Read a key file, refusing one that others may read, as ssh refuses an open private key."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyConfigError(f"key file {p} does not exist; {HOW_TO_CREATE_KEY}") from None
    except OSError as exc:
        raise KeyConfigError(f"key file {p} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyConfigError(f"key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyConfigError(
            f"key file {p} has mode {stat.S_IMODE(st.st_mode):04o}, readable by group or others; "
            f"run 'chmod 600 {p}' and try again"
        )
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"key file {p} cannot be read as text: {exc}") from None
    keys = parse_keys(text, f"key file {p}")
    if not keys:
        raise KeyConfigError(f"key file {p} holds no key; {HOW_TO_CREATE_KEY}")
    return keys


def load_keyring(env_keys: str | None, key_file: str | os.PathLike[str] | None) -> KeyRing:
    """Keys from ``BMC_BACKUP_KEY`` first, then from the key file; the first one encrypts."""
    keys: list[Key] = []
    if env_keys:
        keys.extend(parse_keys(env_keys, "BMC_BACKUP_KEY"))
    if key_file:
        keys.extend(read_key_file(key_file))
    return KeyRing(keys)


def load_keyring_if_any(
    env_keys: str | None, key_file: str | os.PathLike[str] | None
) -> KeyRing | None:
    """:func:`load_keyring`, or None where no usable key is configured (for work that can do
    without one, such as a scan of plaintext exports)."""
    try:
        return load_keyring(env_keys, key_file)
    except KeyConfigError:
        return None


def new_key_text() -> str:
    """A fresh random key, base64-encoded as key files and ``BMC_BACKUP_KEY`` hold it."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def write_key_file(path: str | os.PathLike[str], *, add: bool = False) -> Key:
    """Create a key file with mode 0600, or with ``add`` put a new key first in an existing one.

    The file is created with 0600 from the start (no window where it is readable) and never
    overwritten without ``add``: losing a key loses every backup written with it.
    """
    p = Path(path)
    text = new_key_text()
    key = parse_keys(text, "new key")[0]
    if add:
        old = ""
        if p.exists():
            read_key_file(p)  # refuse to extend a file that is open to others or malformed
            old = p.read_text(encoding="ascii")
        write_atomic(p, f"{text}\n{old}".encode("ascii"), mode=0o600)
    else:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyConfigError(
                f"{p} already exists; refusing to overwrite a key (use --add to rotate: the new key "
                "goes first and encrypts, the old ones stay and still decrypt)"
            ) from None
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    os.chmod(p, 0o600)
    return key


@lru_cache(maxsize=256)
def _hkdf(material: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(material)


def derive_archive_keys(key: Key, salt: bytes) -> tuple[bytes, bytes]:
    """Per-file keys: (AES-256-GCM segment key, HMAC key for the header)."""
    okm = _hkdf(key.material, salt, _ARCHIVE_INFO, 64)
    return okm[:32], okm[32:]


def segment_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_SEGMENTS:
        raise ValueError("archive has too many segments for a 32-bit counter")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class SegmentSealer:
    """Seals successive segments of one archive; the caller says which segment is the last."""

    def __init__(self, aes_key: bytes, nonce_prefix: bytes) -> None:
        self._aead = AESGCM(aes_key)
        self._prefix = nonce_prefix
        self.index = 0

    def seal(self, plaintext: bytes, *, last: bool) -> bytes:
        out = self._aead.encrypt(segment_nonce(self._prefix, self.index, last), plaintext, None)
        self.index += 1
        return out


class SegmentOpener:
    """Opens segments; returns None instead of raising so the reader can diagnose why."""

    def __init__(self, aes_key: bytes, nonce_prefix: bytes) -> None:
        self._aead = AESGCM(aes_key)
        self._prefix = nonce_prefix

    def open(self, ciphertext: bytes, index: int, *, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(segment_nonce(self._prefix, index, last), ciphertext, None)
        except InvalidTag:
            return None


def header_tag(mac_key: bytes, header: bytes) -> bytes:
    return hmac.new(mac_key, header, hashlib.sha256).digest()[:16]


def manifest_mac(key: Key, payload: bytes) -> str:
    """HMAC-SHA256 over a manifest's canonical bytes with a key derived only for manifests."""
    mac_key = _hkdf(key.material, None, _MANIFEST_INFO, 32)
    return hmac.new(mac_key, payload, hashlib.sha256).hexdigest()


def blob_mac_key(key: Key) -> bytes:
    """Key for naming file blobs by content without revealing a plain content hash."""
    return _hkdf(key.material, None, _BLOB_INFO, 32)


def audit_mac(key: Key, payload: bytes) -> str:
    """HMAC-SHA256 of an audit line's hash, with a key derived only for the audit log."""
    mac_key = _hkdf(key.material, None, _AUDIT_INFO, 32)
    return hmac.new(mac_key, payload, hashlib.sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
