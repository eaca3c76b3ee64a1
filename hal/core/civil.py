"""Calendar arithmetic on epoch milliseconds, without `datetime` (absent from MicroPython).

Days are counted from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's
days-from-civil algorithm). "Local" time is UTC plus an offset in ms that the caller supplies
(the backend reads it from the OS; the core never asks a clock or a time zone database).
"""

DAY_MS = 86400000
MINUTE_MS = 60000


def days_from_civil(y, m, d):
    """(year, month 1-12, day 1-31) -> days since 1970-01-01."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """Days since 1970-01-01 -> (year, month, day)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y, m, d


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_in_month(y, m):
    if m == 2:
        return 29 if is_leap(y) else 28
    if m in (4, 6, 9, 11):
        return 30
    return 31


def local_day(now_ms, offset_ms=0):
    """Local day number (days since 1970-01-01) containing `now_ms`."""
    return (now_ms + offset_ms) // DAY_MS


def minute_of_day(now_ms, offset_ms=0):
    return ((now_ms + offset_ms) % DAY_MS) // MINUTE_MS


def day_start_ms(day, offset_ms=0):
    """UTC epoch ms of local midnight starting local day number `day`."""
    return day * DAY_MS - offset_ms


def _add_months(y, m, k):
    m0 = y * 12 + (m - 1) + k
    return m0 // 12, m0 % 12 + 1


def billing_cycle_days(day, billing_day):
    """Local day number -> (first day, first day of next cycle) of its billing cycle.

    The cycle starts at local midnight on `billing_day` (1-31) of each month; in shorter months
    a day past the month's end means its last day (billing day 31 -> 30 April, 28/29 February).
    """
    if not 1 <= billing_day <= 31:
        raise ValueError("billing_day must be 1..31, got %r" % (billing_day,))
    y, m, d = civil_from_days(day)
    if d < min(billing_day, days_in_month(y, m)):
        y, m = _add_months(y, m, -1)
    start = days_from_civil(y, m, min(billing_day, days_in_month(y, m)))
    ny, nm = _add_months(y, m, 1)
    end = days_from_civil(ny, nm, min(billing_day, days_in_month(ny, nm)))
    return start, end


def parse_hhmm(text):
    """'07:30' -> minutes after midnight; ValueError with the bad text otherwise."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError("time %r: expected HH:MM, e.g. 22:00" % (text,))
    h, mi = int(parts[0]), int(parts[1])
    if h > 24 or mi > 59 or (h == 24 and mi != 0):
        raise ValueError("time %r: hours 00-24, minutes 00-59" % (text,))
    return h * 60 + mi


def parse_window(text):
    """'22:00-07:00' -> (start minute, end minute); may wrap past midnight."""
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError("window %r: expected HH:MM-HH:MM, e.g. 18:00-23:00" % (text,))
    start, end = parse_hhmm(parts[0]), parse_hhmm(parts[1])
    if start == end:
        raise ValueError("window %r: start and end are the same" % (text,))
    return start, end


def in_window(minute, window):
    start, end = window
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end
