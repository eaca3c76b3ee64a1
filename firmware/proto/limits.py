"""Every numeric limit of docs/protocol.md in one place (v2)."""

PROTOCOL_VERSION = 2  # v2: id proof of work, op-bound signatures, copy proofs, fixed-size onions

FRAME_HEADER_SIZE = 4
MAX_FRAME = 1_048_576  # body bytes after the 4-byte length
MAX_DEPTH = 16  # CBOR container nesting; our deepest legit shape is 4

MAX_REQUEST_ID = 2**32 - 1
KEY_SIZE = 32  # recipient, node_id
HASH_SIZE = 32
SIG_SIZE = 64

NS_MIN = -32768
NS_MAX = 32767
PUBLIC_NS = 0

MAX_DATA = 76_800

SECOND_MS = 1000
DAY_MS = 86_400_000
TTL_MIN = 10 * SECOND_MS
TTL_MAX_PUBLIC = 14 * DAY_MS  # ns 0
TTL_MAX_OTHER = 30 * DAY_MS

TIME_MIN = 0  # times are ms since the epoch, encoded as i64be in hashes and signatures
TIME_MAX = 2**63 - 1
MAX_FUTURE_TS = 60_000  # a store's ts may be this far ahead of the node clock
SIG_WINDOW = 60_000  # |sig_ts - now| allowed

MAX_COUNT_DEFAULT = 100
MAX_COUNT_LIMIT = 1000
MAX_BYTES_DEFAULT = 900_000
MAX_BYTES_LIMIT = 900_000
MAX_HASHES = 1000
MAX_TEXT = 256  # info's version/state strings, in characters
MAX_ERROR_MSG = 4096  # error frame msg, in characters


def max_ttl(ns):
    """Largest ttl (ms) allowed in namespace ``ns``."""
    return TTL_MAX_PUBLIC if ns == PUBLIC_NS else TTL_MAX_OTHER
