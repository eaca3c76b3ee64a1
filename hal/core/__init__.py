"""Pure HAL decision logic: a MicroPython-compatible subset (no I/O, no clock reads).

Time is always an int of milliseconds passed in by the caller. Imports are limited to
sys struct binascii hashlib json errno time micropython collections gc.
"""
