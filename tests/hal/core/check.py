"""Tiny helpers shared by the dual-runtime tests (pytest.raises is not available in MicroPython)."""


def raises(exc_type, fn, *args, **kwargs):
    """Call fn; assert it raises exc_type; return the exception."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))
