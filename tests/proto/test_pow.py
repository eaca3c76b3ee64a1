"""Identity proof of work (firmware/proto/pow.py): exact values, rejection of weak or foreign
proofs, slices and interruption. Difficulties here are low (<= 16 bits) so tests stay fast; the
network default (24 bits) is measured by bench/pow.py."""

import hashlib

import pytest

from firmware.proto import pow

ID = bytes(range(32))
OTHER = bytes(range(1, 33))


def reference_work(node_id, nonce):
    """docs/protocol.md: u64be(BLAKE2b-64(b"homenode/v2/pow\\0" || node_id || nonce))."""
    digest = hashlib.blake2b(b"homenode/v2/pow\x00" + node_id + nonce, digest_size=8).digest()
    return int.from_bytes(digest, "big")


@pytest.mark.parametrize("bits", [1, 4, 8, 12, 16])
def test_solve_finds_the_first_nonce_with_enough_leading_zero_bits(bits):
    nonce = pow.solve(ID, bits)
    assert len(nonce) == 8 and reference_work(ID, nonce) < 1 << (64 - bits)
    first = next(n for n in range(1 << 24) if reference_work(ID, n.to_bytes(8, "big"))
                 < 1 << (64 - bits))  # fmt: skip
    assert int.from_bytes(nonce, "big") == first  # the counter search, no skipping
    pow.verify(ID, nonce, bits)
    assert pow.work(ID, nonce) == reference_work(ID, nonce)


def test_verify_rejects_low_work_and_proofs_for_another_key():
    nonce = pow.solve(ID, 12)
    work = pow.work(ID, nonce)
    exact_bits = 64 - work.bit_length()  # the leading zero bits this nonce happens to have
    pow.verify(ID, nonce, exact_bits)
    with pytest.raises(pow.PowError, match=f"below the network's {exact_bits + 1} bits"):
        pow.verify(ID, nonce, exact_bits + 1)
    with pytest.raises(pow.PowError):
        pow.verify(OTHER, nonce, 12) if reference_work(OTHER, nonce) >= 1 << 52 else (
            pytest.skip("this nonce happens to work for OTHER too"))


@pytest.mark.parametrize("nonce, bits, ok", [
    (b"", 0, True),  # a test network (difficulty 0) admits ids without proof
    (b"", 1, reference_work(ID, b"") < 1 << 63),
    (b"\x00" * 16, 0, True),
    (b"\x00" * 17, 0, False),  # too long for a record either way
    ("text", 0, False),
])  # fmt: skip
def test_verify_edge_cases(nonce, bits, ok):
    if ok:
        pow.verify(ID, nonce, bits)
    else:
        with pytest.raises(pow.PowError):
            pow.verify(ID, nonce, bits)


def test_programming_errors():
    with pytest.raises(ValueError):
        pow.verify(b"short", b"", 0)
    with pytest.raises(ValueError):
        pow.verify(ID, b"", pow.MAX_BITS + 1)
    with pytest.raises(ValueError):
        pow.search(ID, -1, 0, 1)


def test_search_slices_cover_the_range_exactly():
    found = pow.solve(ID, 10)
    n = int.from_bytes(found, "big")
    assert pow.search(ID, 10, 0, n) is None  # the slice before it holds none
    assert pow.search(ID, 10, n, 1) == found
    assert pow.search(ID, 10, 0, n + 1) == found


def test_progress_is_reported_and_can_stop_the_search():
    calls = []

    def progress(done, expected):
        calls.append((done, expected))
        return len(calls) < 3

    assert pow.solve(ID, 40, slice_size=1000, progress=progress) is None  # 2**40: never found
    assert calls == [(1000, 1 << 40), (2000, 1 << 40), (3000, 1 << 40)]
    # resuming where it stopped gives the same answer as one uninterrupted search
    whole = pow.solve(ID, 14)
    part = pow.solve(ID, 14, slice_size=512, progress=lambda d, e: d < 4096)
    if part is None:
        part = pow.solve(ID, 14, start=4096)
    assert part == whole
    assert pow.expected_hashes(24) == 16_777_216
