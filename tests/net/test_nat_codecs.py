"""firmware.net.nat codecs (exact bytes in and out) and the reachability decision."""

import pytest

from firmware.net import nat
from firmware.net.reachability import advice, decide

IGD_XML = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><SCPDURL>/WANIPCn.xml</SCPDURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>"""


def test_msearch_is_exact():
    assert nat.msearch("urn:x", 3) == (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        b"MX: 3\r\nST: urn:x\r\n\r\n")


def test_ssdp_answers():
    ok = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:x\r\n"
          b"Location: http://192.168.77.1:40621/rootDesc.xml\r\n\r\n")
    assert nat.parse_ssdp_response(ok)["location"] == "http://192.168.77.1:40621/rootDesc.xml"
    assert nat.parse_ssdp_response(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\n\r\n") is None
    assert nat.parse_ssdp_response(b"HTTP/1.1 200 OK\r\nLOCATION: https://x/\r\n\r\n") is None
    assert nat.parse_ssdp_response(b"\xff\x00garbage") is None


def test_http_bodies_length_chunked_and_errors():
    assert nat.parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") == (
        200, {"content-length": "3"}, b"abc")
    chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert nat.parse_http_response(chunked)[::2] == (500, b"abcde")
    for bad in (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", b"no header end",
                b"SIP/2.0 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"):
        with pytest.raises(nat.NatError):
            nat.parse_http_response(bad)


def test_device_description_finds_the_wan_service():
    svc = nat.parse_device_description(IGD_XML, "http://192.168.77.1:40621/rootDesc.xml")
    assert svc == nat.IgdService("http://192.168.77.1:40621/ctl/IPConn",
                                 "urn:schemas-upnp-org:service:WANIPConnection:1")
    with pytest.raises(nat.NatError, match="no WAN IP/PPP"):
        nat.parse_device_description(IGD_XML.replace(b"WANIPConnection", b"Layer3Fwd"), "http://a/")
    with pytest.raises(nat.NatError, match="not valid XML"):
        nat.parse_device_description(b"<root><unclosed>", "http://a/")


def test_soap_request_and_answers():
    svc = nat.IgdService("http://192.168.77.1:40621/ctl/IPConn",
                         "urn:schemas-upnp-org:service:WANIPConnection:1")
    host, port, req = nat.soap_request(svc, "DeletePortMapping", [("NewExternalPort", 7070),
                                                                 ("NewProtocol", "TCP<&>")])
    assert (host, port) == ("192.168.77.1", 40621)
    head, body = req.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.77.1:40621\r\n")
    assert b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#DeletePortMapping"' in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"<NewExternalPort>7070</NewExternalPort><NewProtocol>TCP&lt;&amp;&gt;</NewProtocol>" in body

    ok = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
          b'<s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:x"><NewExternalIPAddress>'
          b"192.0.1.1</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>")
    assert nat.parse_soap_response(200, ok, "GetExternalIPAddress") == {
        "NewExternalIPAddress": "192.0.1.1"}
    fault = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
             b"<detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>718"
             b"</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError>"
             b"</detail></s:Fault></s:Body></s:Envelope>")
    with pytest.raises(nat.UpnpFault) as e:
        nat.parse_soap_response(500, fault, "AddPortMapping")
    assert (e.value.code, e.value.description) == (718, "ConflictInMappingEntry")
    with pytest.raises(nat.NatError, match="HTTP 401"):
        nat.parse_soap_response(401, b"", "AddPortMapping")


def test_natpmp_packets_are_exact():
    assert nat.natpmp_external_request() == b"\x00\x00"
    assert nat.natpmp_map_request(7070, 7071, 3600) == bytes.fromhex("0002" "0000" "1b9e" "1b9f" "00000e10")
    assert nat.parse_natpmp(bytes.fromhex("0080" "0000" "0000002a" "c0000101"), 0) == {
        "epoch": 42, "external_ip": "192.0.1.1"}
    assert nat.parse_natpmp(bytes.fromhex("0082" "0000" "00000007" "1b9e" "1b9f" "00000258"), 2) == {
        "epoch": 7, "internal_port": 7070, "external_port": 7071, "lifetime_s": 600}
    with pytest.raises(nat.NatError, match="not authorized"):
        nat.parse_natpmp(bytes.fromhex("0082" "0002" "00000007" "0000000000000000"), 2)
    for bad in (b"", bytes.fromhex("0081000000000000"), bytes.fromhex("0080" "0000" "00000001")):
        with pytest.raises(nat.NatError):
            nat.parse_natpmp(bad, 0)


def test_default_gateway_from_proc_net_route():
    text = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
            "eth0\t004DA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
            "eth0\t00000000\t014DA8C0\t0003\t0\t0\t0\t00000000\n")
    assert nat.default_gateway(text) == "192.168.77.1"
    assert nat.default_gateway(text.splitlines()[0] + "\n") is None


@pytest.mark.parametrize("ip,public", [("192.0.1.1", True), ("8.8.8.8", True),
                                       ("192.168.1.1", False), ("100.64.0.1", False),
                                       ("10.0.0.1", False), ("127.0.0.1", False),
                                       ("0.0.0.0", False), ("", False), ("::1", False)])
def test_is_public_ipv4(ip, public):
    assert nat.is_public_ipv4(ip) is public


def test_decide_and_advice():
    m = nat.Mapping("upnp", "192.0.1.1", 7070, "192.168.77.10", 7070, 3600)
    assert decide([False, True, None], None) == "direct"
    assert decide([True], m) == "mapped"
    assert decide([False, None], m) == "relayed"
    assert decide([None, None], None) == "unreachable"
    assert decide([], None) == "unreachable"
    text = advice("relayed", why="upnp: no router", relays=2, port=7070, lan="192.168.77.10")
    assert "2 reachable peers" in text and "forward TCP port 7070 to this box (192.168.77.10)" in text
    assert "upnp: no router" in text
    assert "nothing to do" in advice("direct", addr="192.0.1.3:7070")
