"""Errors the message store raises; the RPC layer maps them to wire error codes."""


class StoreError(Exception):
    """Base class of every store error (wire code `internal` unless a subclass says otherwise)."""


class StoreFull(StoreError):
    """The message quota (or the disk) has no room for this message (wire code `full`)."""


class StoreClosed(StoreError):
    """The store's service is not running (not started yet, or shut down)."""


class StoreOpenError(StoreError):
    """The database file cannot be used as-is; nothing in it was changed.

    Raised for a file that is not a homenode message database, a corrupt one, or one written by a
    newer homenode. The message names the file and says how to fix it.
    """
