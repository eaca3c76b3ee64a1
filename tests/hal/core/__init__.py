"""hal core tests that run unchanged under CPython (pytest) and MicroPython (mp_main.py).

Rules for files here: plain `assert`, no pytest imports, no fixtures; helpers in check.py.
"""
