"""What the box's first-boot setup could not apply, shown in `homenode status`.

Why: the owner reads homenode-problems.txt on the card, but an operator looking at the running
box (status, the dashboard) must see the same truth: that the box runs with its previous
settings or the defaults, and every problem. homenode-setup (image/device/setup.py) writes
`<data dir>/setup-report.json` ({"problems": [...], "using": "previous" | "defaults" |
"homenode.toml"}) before the node starts, and removes it when all is well; the node reads it
once at start (`setup_report_source`, one of its info sources).
"""

import json
import os

REPORT_FILE = "setup-report.json"

__all__ = ["REPORT_FILE", "read_setup_report", "setup_report_source"]


def read_setup_report(data_dir: str) -> dict | None:
    """The report as `info` fields, or None when setup had nothing to report."""
    path = os.path.join(data_dir, REPORT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        problems = [str(p) for p in doc["problems"]]
        using = str(doc.get("using", "unknown"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"problems": [f"{path} is unreadable ({type(e).__name__}); see "
                             "homenode-problems.txt on the boot partition"], "using": "unknown"}
    return {"problems": problems, "using": using} if problems else None


def setup_report_source(data_dir: str):
    """An `info` source (for the node's StorageOps `info_sources`): `setup_problems` and
    `setup_using` when setup left a report, else nothing. The file is read once, here."""
    report = read_setup_report(data_dir)
    fields = {} if report is None else {"setup_problems": report["problems"],
                                        "setup_using": report["using"]}
    return lambda: fields
