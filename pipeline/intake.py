"""The intake store: a study's originals in flight, encrypted, where every host can read them.

With ``TELERAD_INTAKE_URL`` set (``s3://`` on an on-site S3-compatible store such as
MinIO, or ``file://`` on a mount every host shares), submission copies the study
there before the batch is recorded, and the de-identify step on any host reads it
back from there, so a batch no longer depends on the submitting machine's disk.
The store must never be the upload location (refused at start-up, like the
mapping store), and everything in it is ciphertext:

    BATCH_ID/key.json      the batch's data key, wrapped by the mapping KEK (local key file or KMS)
    BATCH_ID/000001.enc    one object per original file, AES-256-GCM in 4 MiB chunks
    BATCH_ID/index.enc     the encrypted list of relative paths; written last, so its presence
                           means the copy is complete

Object keys carry only the batch ID and a number (file names may hold PHI: they
travel inside the encrypted index). Each chunk's associated data binds it to the
batch, the object, its position and whether it is the last one, so chunks cannot be
swapped, reordered or cut off unnoticed. The objects are deleted when the batch is done.

Objects go in and out ``CONCURRENCY`` at a time (a 2,000-image study is 2,000 round
trips: one at a time they took 49 s to put on the benchmark site), and a finished
batch is dropped with batch deletes where the store has them (S3's DeleteObjects).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.exceptions import KeyError_, PermanentError, StoragePermanentError
from pipeline.settings import Settings
from pipeline.checksums import sha256_file

FORMAT = "telerad-intake/1"
CONCURRENCY = 8  # requests in flight per batch; below botocore's default pool of 10 connections
CHUNK = 4 * 2**20
CONTENT_TYPE = "application/vnd.telerad.intake"
_LEN = struct.Struct(">I")
_T = TypeVar("_T")


class IntakeError(PermanentError):
    """The intake copy of a batch is missing, incomplete or does not decrypt."""


def _aad(batch_id: str, obj: str, chunk: int, last: bool) -> bytes:
    return json.dumps([FORMAT, batch_id, obj, chunk, last], separators=(",", ":")).encode()


def _wrap_context(batch_id: str) -> dict[str, str]:
    return {"purpose": "telerad-intake", "batch_id": batch_id}


def encrypt_stream(key: bytes, batch_id: str, obj: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Chunked AES-256-GCM: [nonce 12][length 4][ciphertext+tag] per chunk, the last one marked."""
    aes = AESGCM(key)
    chunk_no = 0
    data = src.read(CHUNK)
    while True:
        following = src.read(CHUNK) if len(data) == CHUNK else b""
        last = not following
        nonce = os.urandom(12)
        sealed = aes.encrypt(nonce, data, _aad(batch_id, obj, chunk_no, last))
        dst.write(nonce + _LEN.pack(len(sealed)) + sealed)
        if last:
            return
        data, chunk_no = following, chunk_no + 1


def decrypt_stream(key: bytes, batch_id: str, obj: str, src: BinaryIO, dst: BinaryIO) -> None:
    """The reverse of ``encrypt_stream``; IntakeError when anything was altered or cut off."""
    aes = AESGCM(key)
    chunk_no = 0
    while True:
        head = src.read(16)
        if len(head) < 16:
            raise IntakeError(f"intake object {obj} of batch {batch_id} is cut short; submit the study again")
        (length,) = _LEN.unpack(head[12:])
        sealed = src.read(length)
        last = src.peek(1) == b"" if hasattr(src, "peek") else None
        if last is None:
            pos = src.tell()
            last = src.read(1) == b""
            src.seek(pos)
        try:
            dst.write(aes.decrypt(head[:12], sealed, _aad(batch_id, obj, chunk_no, last)))
        except InvalidTag:
            raise IntakeError(
                f"intake object {obj} of batch {batch_id} does not decrypt: it was altered, moved, or "
                "the hosts do not share TELERAD_MAPPING_KEY_FILE / the KMS key"
            ) from None
        if last:
            return
        chunk_no += 1


class IntakeStore:
    """Encrypted originals of batches in flight, in an ObjectStore apart from the upload location."""

    def __init__(self, store, keyring, *, concurrency: int = CONCURRENCY) -> None:
        # (ObjectStore, pipeline.mapping.Keyring)
        self.store, self.keyring = store, keyring
        self.concurrency = max(1, concurrency)
        self._keys: dict[str, bytes] = {}  # batch ID -> data key: one GET and unwrap per batch, not per object
        self._keys_lock = threading.Lock()

    def _each(self, fn: Callable[[_T], Any], items: Iterable[_T]) -> None:
        """``fn`` over ``items``, ``concurrency`` at a time; the first failure is raised once all have stopped."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="telerad-intake") as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()

    @classmethod
    def from_settings(cls, settings: Settings) -> "IntakeStore":
        from pipeline.mapping import Keyring
        from pipeline.locations import check_intake_apart
        from pipeline.storage import shared_store

        check_intake_apart(settings.effective_store_url, settings.intake_url)
        return cls(shared_store(settings.intake_url, settings), Keyring.from_settings(settings))

    @property
    def url(self) -> str:
        return self.store.url

    # --- writing ----------------------------------------------------------------------
    def put_study(self, batch_id: str, source: Path) -> int:
        """Copy a study folder (or a ZIP, as one file) into the store, encrypted; returns the file count."""
        data_key = AESGCM.generate_key(256)
        kek = self.keyring.current
        self.store.put_bytes(
            f"{batch_id}/key.json",
            json.dumps({"format": FORMAT, "kek": kek.ref.as_dict(),
                        "wrap": kek.wrap(data_key, _wrap_context(batch_id))}).encode(),
            content_type="application/json", metadata={"batch_id": batch_id},
        )
        if source.is_dir():
            kind, files = "folder", list(_files_inside(source))
        else:
            kind, files = "zip", [(source.name, source)]
        with self._keys_lock:
            self._keys[batch_id] = data_key

        def put(numbered: tuple[int, Path]) -> None:
            number, path = numbered
            with open(path, "rb") as src:
                self._put_encrypted(data_key, batch_id, f"{number:06d}.enc", src)

        self._each(put, [(number, path) for number, (_rel, path) in enumerate(files, start=1)])
        # Only once every original is in: the index's presence means the copy is complete.
        index = json.dumps({"kind": kind, "files": [rel for rel, _ in files]}).encode()
        self._put_encrypted(data_key, batch_id, "index.enc", io.BytesIO(index))
        return len(files)

    def _put_encrypted(self, key: bytes, batch_id: str, name: str, src: BinaryIO) -> None:
        with tempfile.NamedTemporaryFile(prefix="telerad-intake-") as tmp:
            encrypt_stream(key, batch_id, name, src, tmp)
            tmp.flush()
            self.store.put_file(
                f"{batch_id}/{name}", Path(tmp.name), content_type=CONTENT_TYPE,
                metadata={"batch_id": batch_id, "sha256": sha256_file(Path(tmp.name))},
            )

    # --- reading ----------------------------------------------------------------------
    def _data_key(self, batch_id: str) -> bytes:
        with self._keys_lock:
            known = self._keys.get(batch_id)
        if known is not None:
            return known
        key = self._fetch_data_key(batch_id)
        with self._keys_lock:
            self._keys[batch_id] = key
        return key

    def _fetch_data_key(self, batch_id: str) -> bytes:
        from pipeline.mapping import KeyRef

        try:
            record = json.loads(self.store.get_bytes(f"{batch_id}/key.json"))
        except StoragePermanentError:
            raise IntakeError(
                f"batch {batch_id} has no originals in the intake store {self.url}; "
                "they were deleted (the batch is done) or never copied: submit the study again"
            ) from None
        ref = KeyRef.from_dict(record.get("kek"))
        kek = self.keyring.find(ref)
        if kek is None:
            raise KeyError_(
                f"the intake copy of batch {batch_id} is wrapped by key {ref}, which this host does "
                "not have: give every host the same TELERAD_MAPPING_KEY_FILE (or KMS key)"
            )
        return kek.unwrap(record["wrap"], _wrap_context(batch_id))

    def _get_decrypted(self, key: bytes, batch_id: str, name: str, dest: Path) -> None:
        with tempfile.NamedTemporaryFile(prefix="telerad-intake-") as tmp:
            try:
                self.store.download_file(f"{batch_id}/{name}", Path(tmp.name))
            except StoragePermanentError:
                raise IntakeError(f"intake object {name} of batch {batch_id} is missing; submit the study again") from None
            with open(tmp.name, "rb") as src, open(dest, "wb") as dst:
                decrypt_stream(key, batch_id, name, src, dst)

    def put_object(self, batch_id: str, name: str, src: BinaryIO) -> None:
        """Store one more encrypted object of the batch (fan-out plans, chunk outputs)."""
        self._put_encrypted(self._data_key(batch_id), batch_id, name, src)

    def get_object(self, batch_id: str, name: str, dest: Path) -> None:
        """Decrypt one named object of the batch into ``dest``."""
        self._get_decrypted(self._data_key(batch_id), batch_id, name, dest)

    def exists(self, batch_id: str, name: str) -> bool:
        return self.store.head(f"{batch_id}/{name}") is not None

    def fetch_files(self, batch_id: str, dest: Path, wanted: set[str]) -> Path:
        """Like ``fetch_study``, only the files whose relative path is in ``wanted`` (a chunk's)."""
        return self.fetch_study(batch_id, dest, wanted)

    def index(self, batch_id: str) -> dict[str, Any]:
        """The batch's index, ``{"kind": "folder" | "zip", "files": [rel, ...]}``, without fetching any original.

        The files are those of ``study.walk`` over the fetched copy, in the same order
        (both sort the paths and leave out links that leave the study), so a file's
        number here is its index there.
        """
        with tempfile.TemporaryDirectory(prefix="telerad-intake-") as tmp:
            path = Path(tmp) / "index.json"
            self._get_decrypted(self._data_key(batch_id), batch_id, "index.enc", path)
            return json.loads(path.read_text())

    def fetch_study(self, batch_id: str, dest: Path, wanted: set[str] | None = None) -> Path:
        """Decrypt the batch's originals under ``dest``; returns the study folder or the ZIP."""
        key = self._data_key(batch_id)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        index = self.index(batch_id)
        root = dest / "study"
        todo: list[tuple[int, Path]] = []
        for number, rel in enumerate(index["files"], start=1):
            if wanted is not None and index["kind"] == "folder" and rel not in wanted:
                continue
            target = (root / rel).resolve()
            if not target.is_relative_to(root.resolve()):
                raise IntakeError(f"intake index of batch {batch_id} names a path outside the study")
            target.parent.mkdir(parents=True, exist_ok=True)
            todo.append((number, target))
        self._each(lambda item: self._get_decrypted(key, batch_id, f"{item[0]:06d}.enc", item[1]), todo)
        if index["kind"] == "zip":
            return root / index["files"][0]
        return root

    def delete(self, batch_id: str) -> int:
        """Remove every object of the batch: the index first, so a half-deleted copy reads as incomplete.

        The rest go in batch deletes where the store has them (S3: 1,000 keys a
        request), else several at once; the wrapped data key goes last.
        """
        from pipeline.storage.base import DeletesMany

        keys = [info.key for info in self.store.list(f"{batch_id}/")]
        first = [k for k in keys if k == f"{batch_id}/index.enc"]
        last = [k for k in keys if k == f"{batch_id}/key.json"]
        rest = sorted(set(keys) - set(first) - set(last))
        for key in first:
            self.store.delete(key)
        if isinstance(self.store, DeletesMany):
            self.store.delete_many(rest)
        else:
            self._each(self.store.delete, rest)
        for key in last:
            self.store.delete(key)
        with self._keys_lock:
            self._keys.pop(batch_id, None)
        return len(keys)


def _files_inside(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file of the study, sorted; links leaving the study are not followed."""
    real_root = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(real_root):
            continue
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


# --- what the batch steps call ----------------------------------------------------------
def put_in_intake(settings: Settings, batch_id: str, source: Path) -> str:
    """Copy a submission into the intake store when one is configured; returns its URL or ""."""
    if not settings.intake_url:
        return ""
    store = IntakeStore.from_settings(settings)
    store.put_study(batch_id, source)
    return store.url


def originals_for(settings: Settings, record, work: Path) -> Path:
    """Where the de-identify step reads the study: decrypted from the intake store, or in place."""
    if not record.intake:
        return Path(record.source)
    return IntakeStore.from_settings(settings).fetch_study(record.batch_id, work / "intake")


def drop_from_intake(settings: Settings, record) -> None:
    """Delete a finished batch's encrypted originals (the upload is confirmed by then)."""
    if record.intake:
        IntakeStore.from_settings(settings).delete(record.batch_id)
