#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Our ESP types against an independent ESP implementation.

The kernel side holds a pair of SAs; the other end of a veth builds and
opens ESP packets itself (RFC 4303, with the python3-cryptography ciphers
and AEADs and Python's hmac; scapy only for the IP, UDP and ICMP headers
and the packet socket). It sends an ICMP echo request protected with the
kernel's inbound SA; the kernel must
accept it and answer through the outbound SA with a packet that decrypts
and verifies here: same identifier, sequence and payload, the sequence
number the SA was told to continue from, RFC 4303 padding, and for
ESP-in-UDP ports 4500 with a valid checksum. IPv4 and IPv6, transport and
tunnel mode, plain ESP and ESP-in-UDP, with and without ESN, over the
AEADs and authenc combinations IKE daemons negotiate. For ESP-in-TCP the
peer is an ordinary TCP socket in a second namespace that speaks RFC 9329
by hand (IKETCP, 16-bit Length framing); the kernel's end of the
connection carries our ULP.

Needs root, python3-scapy and python3-cryptography; prints TAP.
"""

import ctypes
import hashlib
import hmac
import importlib.util
import itertools
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time

WAIT = int(os.environ.get("ESPINTCP_WAIT", "60"))
NS = f"espt-interop-{os.getpid()}"
PEER_NS = f"espt-interop-peer-{os.getpid()}"
CLONE_NEWNET = 0x40000000
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
TCP_ULP = 31

# name: kernel algorithm arguments, cipher, key bytes (with the salt or
# nonce at the end), integrity (hash, key bytes, ICV bytes) or None for an
# AEAD with a 16-byte tag.
ALGS = {
    "gcm128": ("aead rfc4106(gcm(aes)) {k} 128", "gcm", 20, None),
    "gcm256": ("aead rfc4106(gcm(aes)) {k} 128", "gcm", 36, None),
    "ccm128": ("aead rfc4309(ccm(aes)) {k} 128", "ccm", 19, None),
    "chacha20poly1305": ("aead rfc7539esp(chacha20,poly1305) {k} 128",
                         "chacha", 36, None),
    "cbc-sha256": ("enc cbc(aes) {k} auth-trunc hmac(sha256) {a} 128",
                   "cbc", 16, ("sha256", 32, 16)),
    "cbc-sha1": ("enc cbc(aes) {k} auth-trunc hmac(sha1) {a} 96",
                 "cbc", 16, ("sha1", 20, 12)),
    "ctr-sha512": ("enc rfc3686(ctr(aes)) {k} auth-trunc hmac(sha512) {a} 256",
                   "ctr", 20, ("sha512", 64, 32)),
}
SALT = {"gcm": 4, "ccm": 3, "chacha": 4, "cbc": 0, "ctr": 4}
IV = {"gcm": 8, "ccm": 8, "chacha": 8, "cbc": 16, "ctr": 8}
BLOCK = {"cbc": 16}		# others: 4-byte alignment only

ADDR = {
    4: {"a": "10.75.0.1", "b": "10.75.0.2", "ai": "10.75.1.1",
        "bi": "10.75.2.1", "plen": 32},
    6: {"a": "fd00:75::1", "b": "fd00:75::2", "ai": "fd00:75:1::1",
        "bi": "fd00:75:2::1", "plen": 128},
}

# ESP-in-TCP: the peer is an ordinary TCP socket in its own namespace,
# behind veth2/veth3, that frames RFC 9329 itself.
TCP_ADDR = {
    4: {"a": "10.76.0.1", "b": "10.76.0.2", "ai": "10.76.1.1",
        "bi": "10.76.2.1", "plen": 32},
    6: {"a": "fd00:76::1", "b": "fd00:76::2", "ai": "fd00:76:1::1",
        "bi": "fd00:76:2::1", "plen": 128},
}

OUT_SPI, IN_SPI = 0x1000, 0x2000
OSEQ, ISEQ = 0x40, 0x10		# where the SAs start; the peer sends ISEQ + 1
SEQ_HI = 1			# the high half with ESN


class Failure(Exception):
    pass


def sh(*args):
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode:
        raise Failure(f"{' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def enter_netns(name):
    """Sockets made after this live in the namespace; they stay there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def topology():
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "veth0", "address", "02:00:00:00:75:01", "type",
       "veth", "peer", "name", "veth1", "address", "02:00:00:00:75:02")
    sh("sysctl", "-qw", "net.ipv6.conf.veth1.disable_ipv6=1")
    for fam, a in ADDR.items():
        plen = 24 if fam == 4 else 64
        sh("ip", "addr", "add", f"{a['a']}/{plen}", "dev", "veth0", "nodad")
        sh("ip", "addr", "add", f"{a['ai']}/{a['plen']}", "dev", "lo", "nodad")
    sh("ip", "link", "set", "veth0", "up")
    sh("ip", "link", "set", "veth1", "up")
    for a in ADDR.values():
        sh("ip", "neigh", "replace", a["b"], "lladdr", "02:00:00:00:75:02",
           "dev", "veth0", "nud", "permanent")
        sh("ip", "route", "add", a["bi"], "via", a["b"], "dev", "veth0")
    sh("ip", "link", "add", "veth2", "type", "veth", "peer", "name", "veth3",
       "netns", PEER_NS)
    sh("ip", "-n", PEER_NS, "link", "set", "lo", "up")
    for a in TCP_ADDR.values():
        plen = 24 if ":" not in a["a"] else 64
        sh("ip", "addr", "add", f"{a['a']}/{plen}", "dev", "veth2", "nodad")
        sh("ip", "addr", "add", f"{a['ai']}/{a['plen']}", "dev", "lo", "nodad")
        sh("ip", "-n", PEER_NS, "addr", "add", f"{a['b']}/{plen}", "dev",
           "veth3", "nodad")
    sh("ip", "link", "set", "veth2", "up")
    sh("ip", "-n", PEER_NS, "link", "set", "veth3", "up")
    for a in TCP_ADDR.values():
        sh("ip", "route", "add", a["bi"], "via", a["b"], "dev", "veth2")
    # Loads xfrm_user, which compiles per-socket policies (EINVAL before).
    sh("ip", "xfrm", "state", "flush")


def xfrm_bypass(sock, family):
    """Per-socket bypass policies, as an IKE daemon sets on its sockets: UDP
    checks the inbound policy before the encapsulation handler, so in
    transport mode the host-to-host policy would drop ESP-in-UDP."""
    v4 = family == socket.AF_INET
    for direction in (0, 1):	# XFRM_POLICY_IN, XFRM_POLICY_OUT
        # struct xfrm_userpolicy_info: selector (family at 40), lifetime
        # limits at 56 (4 x XFRM_INF), dir at 160, action ALLOW (0).
        pol = bytearray(168)
        struct.pack_into("=H", pol, 40, family)
        struct.pack_into("=4Q", pol, 56, *[2**64 - 1] * 4)
        pol[160] = direction
        sock.setsockopt(socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6,
                        17 if v4 else 35,	# IP(V6)_XFRM_POLICY
                        bytes(pol))


def encap_sockets():
    """ESP-in-UDP needs a UDP socket in encapsulation mode on port 4500."""
    socks = []
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"),
                             (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((any_addr, 4500))
        s.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        xfrm_bypass(s, family)
        socks.append(s)
    return socks


def install(fam, mode, encap, alg, esn, keys, a=None, ports=(4500, 4500)):
    """SAs and policies; encap is None, "espinudp" or "espintcp" (ports
    are then the local and the peer's)."""
    a = a or ADDR[fam]
    spec, _, _, integ = ALGS[alg]
    sh("ip", "xfrm", "state", "flush")
    sh("ip", "xfrm", "policy", "flush")
    for src, dst, spi, key, seq in ((a["a"], a["b"], OUT_SPI, "out", "oseq"),
                                    (a["b"], a["a"], IN_SPI, "in", "seq")):
        args = ["ip", "xfrm", "state", "add", "src", src, "dst", dst,
                "proto", "esp", "spi", hex(spi), "mode", mode]
        k, ak = keys[key]
        args += spec.format(k="0x" + k.hex(),
                            a="0x" + ak.hex() if integ else "").split()
        if encap:
            sport, dport = ports if key == "out" else ports[::-1]
            args += ["encap", encap, str(sport), str(dport), "0.0.0.0"]
        start = OSEQ if key == "out" else ISEQ
        args += ["replay-window", "32", f"replay-{seq}", hex(start)]
        if esn:
            args += ["flag", "esn", f"replay-{seq}-hi", str(SEQ_HI)]
        sh(*args)
    if mode == "tunnel":
        sel_a, sel_b = f"{a['ai']}/{a['plen']}", f"{a['bi']}/{a['plen']}"
    else:
        sel_a, sel_b = f"{a['a']}/{a['plen']}", f"{a['b']}/{a['plen']}"
    for d, s, t, ts, td in (("out", sel_a, sel_b, a["a"], a["b"]),
                            ("in", sel_b, sel_a, a["b"], a["a"])):
        sh("ip", "xfrm", "policy", "add", "src", s, "dst", t, "dir", d,
           "tmpl", "src", ts, "dst", td, "proto", "esp", "mode", mode)


def icv(integ, key, esp_bytes, esn):
    hname, _, size = integ
    data = esp_bytes + (SEQ_HI.to_bytes(4, "big") if esn else b"")
    return hmac.new(key, data, getattr(hashlib, hname)).digest()[:size]


def _cipher(kind, key, iv, encrypt):
    """The raw cipher of a non-AEAD transform, from the crypto library."""
    from cryptography.hazmat.primitives.ciphers import (Cipher, algorithms,
                                                        modes)
    if kind == "cbc":
        c = Cipher(algorithms.AES(key), modes.CBC(iv))
    else:	# RFC 3686: nonce | IV | counter starting at 1
        c = Cipher(algorithms.AES(key[:-4]),
                   modes.CTR(key[-4:] + iv + b"\0\0\0\1"))
    return c.encryptor() if encrypt else c.decryptor()


def _aead(kind, key):
    from cryptography.hazmat.primitives.ciphers import aead

    k = key[:-SALT[kind]]
    if kind == "gcm":
        return aead.AESGCM(k)
    if kind == "ccm":
        return aead.AESCCM(k, tag_length=16)
    return aead.ChaCha20Poly1305(k)


def esp_seal(alg, key, akey, spi, seq, esn, payload, nh):
    """An ESP packet (RFC 4303) from scratch: header, IV, ciphertext, ICV."""
    _, kind, _, integ = ALGS[alg]
    hdr = spi.to_bytes(4, "big") + seq.to_bytes(4, "big")
    iv = os.urandom(IV[kind])
    align = BLOCK.get(kind, 4)
    padlen = (-(len(payload) + 2)) % align
    plain = payload + bytes(range(1, padlen + 1)) + bytes([padlen, nh])
    if integ:
        enc = _cipher(kind, key, iv, True)
        body = hdr + iv + enc.update(plain) + enc.finalize()
        return body + icv(integ, akey, body, esn)
    aad = hdr[:4] + (SEQ_HI.to_bytes(4, "big") if esn else b"") + hdr[4:]
    return hdr + iv + _aead(kind, key).encrypt(key[-SALT[kind]:] + iv,
                                               plain, aad)


def esp_open(alg, key, akey, esn, data):
    """Verify and decrypt an ESP packet; (plaintext with trailer)."""
    _, kind, _, integ = ALGS[alg]
    hdr, iv = data[:8], data[8:8 + IV[kind]]
    if integ:
        body, tag = data[:-integ[2]], data[-integ[2]:]
        if not hmac.compare_digest(tag, icv(integ, akey, body, esn)):
            raise Failure("integrity check value does not verify")
        dec = _cipher(kind, key, iv, False)
        return dec.update(body[8 + IV[kind]:]) + dec.finalize()
    from cryptography.exceptions import InvalidTag

    aad = hdr[:4] + (SEQ_HI.to_bytes(4, "big") if esn else b"") + hdr[4:]
    try:
        return _aead(kind, key).decrypt(key[-SALT[kind]:] + iv,
                                        data[8 + IV[kind]:], aad)
    except InvalidTag as e:
        raise Failure("AEAD tag does not verify") from e


def dummy_packet(alg, esn, keys, seq):
    """RFC 4303 2.6: a dummy packet, next header 59 (no next header), sealed
    with the kernel's inbound SA like any other; the receiver must drop it."""
    return esp_seal(alg, *keys["in"], IN_SPI, seq, esn, os.urandom(64), 59)


def raw_listener(fam):
    """A raw socket for protocol 59 on the kernel's side: a dummy packet
    passed up instead of dropped would reach it."""
    s = socket.socket(socket.AF_INET if fam == 4 else socket.AF_INET6,
                      socket.SOCK_RAW, 59)
    s.setblocking(False)
    return s


def check_raw_listener(s):
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return
    finally:
        s.close()
    raise Failure(f"a dummy packet was passed up: {data.hex()}")


def echo_request(fam, mode, alg, esn, keys, a, seq_no=None):
    """An ICMP echo request from the peer, sealed with the kernel's inbound
    SA: (ESP packet, what verify_reply() needs)."""
    from scapy.all import ICMP, ICMPv6EchoRequest, IP, IPv6, Raw, raw

    ip = IP if fam == 4 else IPv6
    src, dst = (a["bi"], a["ai"]) if mode == "tunnel" else (a["b"], a["a"])
    ident, seq, payload = 0x7575, 3, os.urandom(200)
    if fam == 4:
        inner = IP(src=src, dst=dst) / ICMP(type=8, id=ident, seq=seq) / \
            Raw(payload)
    else:
        inner = IPv6(src=src, dst=dst) / \
            ICMPv6EchoRequest(id=ident, seq=seq, data=payload)
    inner = ip(raw(inner))	# checksums
    if mode == "tunnel":
        body, nh = raw(inner), 4 if fam == 4 else 41
    else:
        body, nh = raw(inner.payload), 1 if fam == 4 else 58
    esp = esp_seal(alg, *keys["in"], IN_SPI, seq_no or ISEQ + 1, esn, body,
                   nh)
    return esp, (fam, mode, alg, esn, keys, src, dst, ident, seq, payload)


def verify_reply(data, outer, want):
    """The kernel's answer: ESP packet data, outer (src, dst) addresses."""
    from scapy.all import ICMP, ICMPv6EchoReply, IP, IPv6, raw

    fam, mode, alg, esn, keys, src, dst, ident, seq, payload = want
    ip = IP if fam == 4 else IPv6
    spi, sq = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
    if (spi, sq) != (OUT_SPI, OSEQ + 1):
        raise Failure(f"ESP spi {spi:#x} seq {sq:#x}, want "
                      f"{OUT_SPI:#x} {OSEQ + 1:#x}")
    plain = esp_open(alg, *keys["out"], esn, data)

    # RFC 4303 2.4: padding bytes are 1, 2, 3, ...
    padlen, got_nh = plain[-2], plain[-1]
    pad = plain[-2 - padlen:-2]
    if pad != bytes(range(1, padlen + 1)):
        raise Failure(f"padding {pad.hex()}")
    body = plain[:-2 - padlen]
    if mode == "tunnel":
        want_nh = 4 if fam == 4 else 41
        inner = ip(body)
        addrs = (inner.src, inner.dst)
        icmp = raw(inner.payload)
    else:
        want_nh = 1 if fam == 4 else 58
        addrs = outer
        icmp = body
    if got_nh != want_nh:
        raise Failure(f"next header {got_nh}, want {want_nh}")
    if addrs != (dst, src):
        raise Failure(f"inner addresses {addrs[0]} -> {addrs[1]}")
    if fam == 4:
        r = ICMP(icmp)
        got = (r.type, r.id, r.seq, raw(r.payload))
    else:
        r = ICMPv6EchoReply(icmp)
        got = (r.type, r.id, r.seq, r.data)
    if got != (0 if fam == 4 else 129, ident, seq, payload):
        raise Failure(f"not the echo reply: {r.summary()}")


def run_case(fam, mode, encap, alg, esn, dummy=False):
    # Imported here: after entering the namespace (scapy lists interfaces).
    from scapy.all import Ether, IP, IPv6, Raw, UDP, raw

    a = ADDR[fam]
    _, _, klen, integ = ALGS[alg]
    keys = {d: (os.urandom(klen), os.urandom(integ[1]) if integ else b"")
            for d in ("in", "out")}
    install(fam, mode, "espinudp" if encap else None, alg, esn, keys)

    ip = IP if fam == 4 else IPv6
    # With a dummy packet first: the kernel's first answer must still be
    # the echo reply (no ICMP error for the dummy), with OSEQ + 1.
    esp, want = echo_request(fam, mode, alg, esn, keys, a,
                             ISEQ + 2 if dummy else None)

    def outer(esp):
        if encap:
            pkt = ip(src=a["b"], dst=a["a"]) / UDP(sport=4500, dport=4500) / \
                Raw(esp)
        elif fam == 4:
            pkt = IP(src=a["b"], dst=a["a"], proto=50) / Raw(esp)
        else:
            pkt = IPv6(src=a["b"], dst=a["a"], nh=50) / Raw(esp)
        return Ether(src="02:00:00:00:75:02", dst="02:00:00:00:75:01") / pkt

    frame = outer(esp)
    if dummy:
        listener = raw_listener(fam)
        frame = [outer(dummy_packet(alg, esn, keys, ISEQ + 1)), frame]

    def from_kernel(p):
        if not p.haslayer(ip) or p[ip].src != a["a"]:
            return False
        if encap:
            return p.haslayer(UDP) and p[UDP].sport == 4500
        return (p[ip].proto if fam == 4 else p[ip].nh) == 50

    reply = exchange(frame, from_kernel)[ip]
    if encap:
        udp = reply[UDP]
        if (udp.sport, udp.dport) != (4500, 4500):
            raise Failure(f"UDP ports {udp.sport}->{udp.dport}")
        check = udp.chksum
        if fam == 6 or check:
            u = reply.copy()
            del u[UDP].chksum
            if check != ip(raw(u))[UDP].chksum:
                raise Failure(f"bad UDP checksum {check:#x}")
        data = raw(udp.payload)
    else:
        data = raw(reply.payload)
    verify_reply(data, (reply.src, reply.dst), want)
    if dummy:
        check_raw_listener(listener)
        check_sa_packets(a, 2)


def check_sa_packets(a, want):
    """The inbound SA authenticated and counted every packet, the dummy
    one too."""
    out = sh("ip", "-s", "xfrm", "state", "get", "src", a["b"], "dst",
             a["a"], "proto", "esp", "spi", hex(IN_SPI))
    m = re.search(r"(\d+)\(bytes\), (\d+)\(packets\)", out)
    if not m:
        raise Failure(f"no packet counter for the inbound SA: {out}")
    if int(m.group(2)) != want:
        raise Failure(f"inbound SA counted {m.group(2)} packets, want {want}")


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Failure("the kernel closed the TCP connection")
        buf += chunk
    return buf


def run_tcp_case(fam, mode, alg, esn, dummy=False):
    """RFC 9329 by hand on the peer: IKETCP, then Length-framed ESP over a
    plain TCP socket; the kernel's end has our ULP and SAs with
    encap espintcp."""
    a = TCP_ADDR[fam]
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    _, _, klen, integ = ALGS[alg]
    keys = {d: (os.urandom(klen), os.urandom(integ[1]) if integ else b"")
            for d in ("in", "out")}

    lsock = socket.socket(af, socket.SOCK_STREAM)
    xfrm_bypass(lsock, af)	# the accepted socket inherits it
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((a["a"], 4500))
    lsock.listen(1)
    enter_netns(PEER_NS)
    try:
        peer = socket.socket(af, socket.SOCK_STREAM)
        peer.settimeout(WAIT)
        peer.connect((a["a"], 4500))
    finally:
        enter_netns(NS)
    with lsock, peer:
        peer.sendall(b"IKETCP")
        lsock.settimeout(WAIT)
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(WAIT)
            if recv_exact(conn, 6) != b"IKETCP":
                raise Failure("no IKETCP prefix")
            conn.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"espintcp")
            pport = peer.getsockname()[1]
            install(fam, mode, "espintcp", alg, esn, keys, a, (4500, pport))

            esp, want = echo_request(fam, mode, alg, esn, keys, a,
                                     ISEQ + 2 if dummy else None)
            if dummy:
                listener = raw_listener(fam)
                d = dummy_packet(alg, esn, keys, ISEQ + 1)
                peer.sendall(struct.pack("!H", len(d) + 2) + d)
            peer.sendall(struct.pack("!H", len(esp) + 2) + esp)
            length = struct.unpack("!H", recv_exact(peer, 2))[0]
            if length < 2 + 8:
                raise Failure(f"Length {length}")
            data = recv_exact(peer, length - 2)
            if data[:4] == b"\0\0\0\0":
                raise Failure("an IKE message, not ESP")
            verify_reply(data, (a["a"], a["b"]), want)
            if dummy:
                check_raw_listener(listener)
                check_sa_packets(a, 2)
            sh("ip", "xfrm", "state", "flush")


def exchange(frame, match):
    """Send a frame on veth1; the first frame that matches, or Failure."""
    from scapy.all import conf

    sock = conf.L2socket(iface="veth1")
    try:
        for f in frame if isinstance(frame, list) else [frame]:
            sock.send(f)
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            p = sock.recv()
            if p is not None and match(p):
                return p
    finally:
        sock.close()
    stats = [" ".join(line.split()) for line in open("/proc/net/xfrm_stat")
             if not line.split()[1] == "0"]
    raise Failure("no ESP answer from the kernel; xfrm_stat: " +
                  (", ".join(stats) or "all 0") + "; " +
                  " ".join(sh("ip", "-s", "xfrm", "state").split()))


def main():
    if os.geteuid():
        print("1..0 # SKIP needs root")
        return 4
    for mod in ("scapy", "cryptography"):
        if importlib.util.find_spec(mod) is None:
            print(f"1..0 # SKIP python3-{mod} missing")
            return 4

    cases = []
    names = list(ALGS)
    for i, (fam, mode, encap, esn) in enumerate(itertools.product(
            (4, 6), ("transport", "tunnel"), (False, True), (False, True))):
        alg = names[i % len(names)]
        name = (f"ipv{fam}_{mode}_{'udp' if encap else 'plain'}_{alg}"
                f"{'_esn' if esn else ''}")
        cases.append((name, (fam, mode, encap, alg, esn)))
    # Every algorithm at least twice, once per family.
    for i, alg in enumerate(names):
        fam = 6 if i % 2 else 4
        cases.append((f"ipv{fam}_transport_plain_{alg}_esn",
                      (fam, "transport", False, alg, True)))

    # ESP-in-TCP: both families and modes, AEAD and authenc, ESN.
    for i, (fam, mode) in enumerate(itertools.product((4, 6),
                                                      ("transport", "tunnel"))):
        alg, esn = names[(3 * i) % len(names)], bool(i % 2)
        cases.append((f"ipv{fam}_{mode}_tcp_{alg}{'_esn' if esn else ''}",
                      (fam, mode, "tcp", alg, esn)))

    # RFC 4303 dummy packets before an echo request: every encapsulation,
    # both families, both modes.
    for i, (fam, encap, mode) in enumerate(itertools.product(
            (4, 6), (False, True, "tcp"), ("transport", "tunnel"))):
        alg = names[i % len(names)]
        kind = "tcp" if encap == "tcp" else "udp" if encap else "plain"
        cases.append((f"ipv{fam}_{mode}_{kind}_{alg}_dummy_dropped",
                      (fam, mode, encap, alg, False, True)))

    print("TAP version 13")
    print(f"1..{len(cases)}")
    sh("ip", "netns", "add", NS)
    sh("ip", "netns", "add", PEER_NS)
    enter_netns(NS)
    failed = 0
    try:
        topology()
        socks = encap_sockets()
        for num, (name, args) in enumerate(cases, 1):
            try:
                if args[2] == "tcp":
                    run_tcp_case(args[0], args[1], *args[3:])
                else:
                    run_case(*args)
                print(f"ok {num} {name}", flush=True)
            except (Failure, OSError) as e:	# OSError: a socket call
                print(f"# {e!r}" if isinstance(e, OSError) else f"# {e}")
                print(f"not ok {num} {name}", flush=True)
                failed += 1
        for s in socks:
            s.close()
        sh("ip", "xfrm", "state", "flush")
        sh("ip", "xfrm", "policy", "flush")
    finally:
        for ns in (NS, PEER_NS):
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
