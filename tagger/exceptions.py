"""Small named exceptions. Item-level problems carry a reason code stored in ``failures``."""

from __future__ import annotations


class TaggerError(Exception):
    """Base class for errors tagger reports to users with a one-line message."""


class ConfigError(TaggerError):
    """A setting or argument is unusable."""


class CatalogueError(TaggerError):
    """A catalogue file is malformed; the message names the line."""

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None):
        where = f"{source}:" if source else ""
        where += f"line {line}: " if line is not None else (" " if source else "")
        super().__init__(f"{where}{message}")
        self.line = line


class ArtifactError(TaggerError):
    """A model artifact is missing, incomplete or inconsistent."""


class NoActiveModel(TaggerError):
    """No model version is active; register one with `tagger model register URI --activate`."""


class UnknownModelVersion(TaggerError):
    """A model version that is not registered was named."""


class UnknownJob(TaggerError):
    """A job id that does not exist was named."""


class ItemError(TaggerError):
    """One item could not be tagged. ``reason`` is the code stored in ``failures``."""

    reason = "error"
    #: transient errors are retried (with back-off) before they become a failure row
    transient = False


class MissingImage(ItemError):
    reason = "missing_image"


class NotAnImage(ItemError):
    reason = "not_an_image"


class CorruptImage(ItemError):
    reason = "corrupt_image"


class TooLarge(ItemError):
    reason = "too_large"


class StorageError(ItemError):
    """Storage did not answer properly (throttling, timeouts, 5xx) after client retries.

    Transient; the subclasses below are the answers that retrying cannot change.
    """

    reason = "storage_error"
    transient = True


class StorageRejected(StorageError):
    """Storage refused the request with a client error (400 InvalidRequest, 405, 412...)
    that would come back the same on every retry: failed at once, not retried."""

    transient = False


class AccessDenied(StorageRejected):
    """403 AccessDenied (a policy, credential or KMS problem; S3 also answers 403 for a
    missing key when the caller lacks s3:ListBucket). Its own reason code so operators
    can tell a permissions problem from an outage, fix the policy and re-run the sweep."""

    reason = "access_denied"


class BatchError(ItemError):
    """The whole batch failed for a reason that is not the item's (a bug, a model error)."""

    reason = "internal_error"


class WorkerCrash(ItemError):
    """Every delivery of this item's batch died (process killed, time limit), down to the
    item alone: it is what kills the worker, so it is failed instead of retried forever."""

    reason = "worker_crash"
