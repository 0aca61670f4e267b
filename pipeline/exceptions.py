"""Telerad's error families.

Every error says what is wrong and what to do about it, and never carries PHI:
messages name files by their position in the study (``file 3 of 12``, or a
path relative to the study root that the caller has checked), never by patient
data. Two families decide what the queue does:

* ``TransientError``: worth retrying (network, throttling, a busy disk).
* ``PermanentError``: retrying cannot help; the batch fails (or the file is
  quarantined) with this message as the reason.
"""

from __future__ import annotations


class TeleradError(Exception):
    """Base of every error Telerad raises on purpose."""


class TransientError(TeleradError):
    """A failure that may pass: retry with backoff."""


class PermanentError(TeleradError):
    """A failure that retrying cannot fix: stop and say why."""


# --- configuration -----------------------------------------------------------
class ConfigError(PermanentError):
    """Settings or a profile are invalid; the message names the setting or file."""


# --- input -----------------------------------------------------------------
class SubmissionError(PermanentError):
    """A submission is refused before any work starts (missing path, empty study...)."""


class NotDicomError(PermanentError):
    """The file is not a DICOM object we process (DICOMDIR, thumbnail, text): it is skipped."""


class DicomReadError(PermanentError):
    """The file looks like DICOM but cannot be parsed: the batch fails closed."""


class DeidentificationError(PermanentError):
    """A file could not be de-identified safely: the batch fails closed."""


class RefusedFileError(PermanentError):
    """A file is refused by policy (e.g. burned-in annotation): it is quarantined, not uploaded."""


class VerificationError(PermanentError):
    """De-identified output still holds something it must not: nothing is uploaded."""


class EnqueueError(SubmissionError):
    """The broker did not take a recorded batch: it is marked failed, and ``telerad retry`` re-enqueues it."""


class UnsafeArchiveError(SubmissionError):
    """A ZIP escapes its folder, holds links, or unpacks past the size limits."""


# --- storage -----------------------------------------------------------------
class StorageError(TeleradError):
    """Base for object-store failures."""


class StorageTransientError(StorageError, TransientError):
    """Throttling, 5xx, timeouts, resets: retried with backoff."""


class StoragePermanentError(StorageError, PermanentError):
    """Missing bucket, access denied, bad credentials: not retried."""


class ObjectNotFound(StoragePermanentError):
    """The key does not exist in the store."""


class IntegrityError(PermanentError):
    """A downloaded or uploaded object does not match its recorded size or SHA-256."""


# --- mapping store and keys ------------------------------------------------------
class MappingError(PermanentError):
    """The re-identification mapping cannot be written, found or decrypted."""


class KeyError_(MappingError):
    """A key is missing, wrong or cannot unwrap the data (name avoids shadowing KeyError)."""


class AuditError(PermanentError):
    """The audit log cannot be written, or its hash chain is broken."""


# --- several hosts -----------------------------------------------------------------
class LeaseLostError(TeleradError):
    """This host's lease on a batch's step was lost (it lapsed, or another host took the step over).

    Neither transient nor permanent: the step stops without committing anything, and
    the task records no failure, since the host now holding the lease runs the step
    and its result is the one that counts. Nothing to do: `telerad status BATCH_ID`
    shows which host has it.
    """
