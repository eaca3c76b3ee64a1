"""MicroPython entry point: run every test_* function of the core test modules.

tools/micropython/run.mjs calls main(); it returns the number of failures (0 = success).
The same modules are collected by pytest under CPython.
"""

import sys

MODULES = ("test_bucket", "test_led", "test_thermal", "test_civil", "test_bandwidth", "test_wire",
           "test_storage", "test_button", "test_health")


def _show(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    else:  # CPython, when run by hand
        import traceback
        traceback.print_exception(exc)


def main(modules=MODULES):
    passed = 0
    failed = []
    for modname in modules:
        full = "tests.hal.core." + modname
        __import__(full)
        mod = sys.modules[full]
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            try:
                fn()
                passed += 1
            except Exception as e:  # report every failure, then fail the run
                print("FAIL %s.%s" % (modname, name))
                _show(e)
                failed.append(modname + "." + name)
    print("%s: %d passed, %d failed" % (sys.implementation.name, passed, len(failed)))
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
