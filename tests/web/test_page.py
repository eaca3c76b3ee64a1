"""The page as HTML (pure): same words as the LED table in code, self-contained, charts."""

import re

from firmware.web.history import History
from firmware.web.page import led_css, render_page
from hal.core import led
from tests.web.sample_info import NODE_ID, info


def test_every_state_shows_the_tables_words_and_colour():
    for name in led.STATE_NAMES:
        page = render_page(info(health=name, health_reason="because"), None, token="T",
                           qr_svg="<svg/>")
        p = led.state_pattern(name)
        assert f'data-state="{name}"' in page
        assert p.meaning.replace("'", "&#x27;") in page and "because" in page
        assert p.action.replace("'", "&#x27;") in page
        assert "#{:02x}{:02x}{:02x}".format(*p.colour) in led_css(name)


def test_page_is_self_contained_no_script_no_outside_urls():
    h = History()
    for m in range(300):
        h.add(1796173185 - 18000 + m * 60, {"temp_c": 50.0 + m % 5, "messages": m,
                                           "peers_live": 3, "up_bytes": 1000, "down_bytes": 10})
    page = render_page(info(), h, token="T0K", qr_svg="<svg>qr</svg>",
                       now_s=1796173185)
    assert "<script" not in page.lower()
    urls = re.findall(r'(?:href|src|action)="([^"]+)"', page)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert re.findall(r"https?://", page.replace("http://www.w3.org/2000/svg", "")) == []
    assert 'name=token value="T0K"' in page
    assert NODE_ID in page and NODE_ID[:16] in page
    assert page.count('<svg class="chart"') == 8  # 4 series x (24 h, 30 days)
    assert "polyline" in page
    assert "61.5 GB of the 200.0 GB monthly cap" in page and "paced to 52.0 KB/s" in page
    assert "relayed" in page and "switch on UPnP" in page


def test_update_map_is_shown_when_present_and_bootstrap_note_when_lonely():
    page = render_page(info(update={"state": "downloading", "version": "0.2.0"}), None,
                       token="T", qr_svg="")
    assert "downloading" in page and "0.2.0" in page
    lonely = info(peers_live=0, join={"bootstrap": "none", "lan_discovery": "on"})
    assert "no bootstrap configured" in render_page(lonely, None, token="T", qr_svg="")
    assert "no bootstrap configured" not in render_page(info(), None, token="T", qr_svg="")
