"""First boot on the real image (QEMU): a bad homenode.toml changes nothing and every problem
is reported truthfully, on the card and in status; the node id file is on the card the moment
setup announces it (a power cut right after the announcement keeps it)."""

import pytest

from qemu.guest import Guest
from qemu.harness import fat_read, fat_write

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

CARD_MIB = 4096
BAD = ('[device]\nhostname = "Attic Node"\n\n[bandwidth]\nmonthly_cap = 200\n\n'
       '[thermal]\nwarm_c = 85\nhot_c = 70\ncritical_c = 60\n')


def test_bad_file_on_first_boot_and_power_cut_after_the_node_id(sd_image, tmp_path):
    with Guest.machine(sd_image.raw, tmp_path / "vm", CARD_MIB) as m:
        fat_write(m.disk, "homenode.toml", BAD.encode(), tmp_path)
        m.start()
        node_id = m.wait_console(r"homenode-setup: node id ([0-9a-f]{64})", 900,
                                 "setup-done").group(1)
        m.power_cut()  # pull the plug as soon as the id is announced
        assert fat_read(m.disk, "homenode-node-id.txt").decode() == node_id + "\n"

        g = Guest(m)
        st = g.boot()  # the same card again: the report is there, and in status
        assert g.node_id == node_id
        problems = fat_read(m.disk, "homenode-problems.txt").decode()
        assert "it runs with the default settings" in problems and "kept" not in problems
        for fragment in ('[device] hostname = "Attic Node"', "did you mean monthly_cap_gb",
                         "warm_c < hot_c < critical_c"):
            assert fragment in problems, problems
        assert st["setup_using"] == "defaults" and len(st["setup_problems"]) == 3, st
        m.powerdown()
