from hal.core.bucket import TokenBucket

from tests.hal.core.check import raises


def test_starts_full_and_refills_at_rate():
    b = TokenBucket(1000, 500, 0)
    assert b.take(500, 0)
    assert not b.take(1, 0)
    assert b.wait_ms(100, 0) == 100
    assert b.take(100, 100)
    assert b.level(100000) == 500


def test_clock_going_backwards_mints_nothing():
    b = TokenBucket(1000, 500, 10000)
    assert b.take(500, 10000)
    assert b.level(5000) == 0


def test_force_leaves_a_debt_that_refill_repays():
    b = TokenBucket(1000, 500, 0)
    b.force(1500, 0)
    assert b.level(0) == -1000
    assert b.wait_ms(1, 0) == 1001
    assert b.level(1500) == 500


def test_rejects_bad_parameters():
    raises(ValueError, TokenBucket, -1, 10, 0)
    raises(ValueError, TokenBucket, 1, 0, 0)
    assert TokenBucket(1, 10, 0).wait_ms(11, 0) == -1
