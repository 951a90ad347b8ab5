#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Newer SA attributes with our ESP types: direction, NAT keepalive, per CPU.

XFRMA_SA_DIR, XFRMA_NAT_KEEPALIVE_INTERVAL and XFRMA_SA_PCPU are checked by
the XFRM core, before and after the ESP type's init_state(), and on the
data path. With our esp4/esp6 in place of the stock ones, SAs carrying them
must be accepted or refused exactly as the core's rules say, and must carry
traffic as any other SA. Debian 12's iproute2 cannot set them, so this test
speaks XFRM netlink itself (SAs); policies still come from `ip xfrm`.

Two network namespaces, A and B, over a veth. Policies protect only UDP to
or from a test port, so the sockets that carry ESP-in-UDP (port 4500) and
ESP-in-TCP (an RFC 9329 connection from A to B's port 4500, IKETCP prefix,
espintcp ULP on both ends) need no bypass. Traffic is a content-checked
UDP round trip A -> B -> A, and every SA that should carry it must count it.

On a kernel that ignores these attributes (Debian 12's 6.1: types above
XFRMA_MAX are skipped by the netlink parser) an SA added with one does not
report it back, and every case is skipped.

Needs root; prints TAP.
"""

import ctypes
import errno
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time
import traceback

WAIT = int(os.environ.get("ESPINTCP_WAIT", "60"))
TAG = os.getpid()
CLONE_NEWNET = 0x40000000
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
TCP_ENCAP_ESPINTCP = 7
TCP_ULP = 31
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IKE_PORT = 4500
APP_PORT = 5555

# Netlink and XFRM (include/uapi/linux/{netlink,xfrm}.h).
NETLINK_XFRM = 6
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR = 0x2
NLMSGERR_ATTR_MSG = 1
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRMA_ALG_AEAD = 18
XFRMA_ENCAP = 4
XFRMA_SA_DIR = 33		# __u8
XFRMA_NAT_KEEPALIVE_INTERVAL = 34	# __u32, seconds
XFRMA_SA_PCPU = 35		# __u32
DIR_IN, DIR_OUT = 1, 2
XFRM_INF = 2**64 - 1
USERSA_INFO_LEN = 224		# struct xfrm_usersa_info
CURLFT_PACKETS = 168		# its curlft.packets

ADDR = {4: ("10.78.0.1", "10.78.0.2"), 6: ("fd00:78::1", "fd00:78::2")}
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
PLEN = {4: 32, 6: 128}

libc = ctypes.CDLL(None, use_errno=True)
ROOT_NS = os.open("/proc/self/ns/net", os.O_RDONLY)


class Failure(Exception):
    pass


def log(msg):
    print(f"# {msg}", flush=True)


def sh(*args):
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode:
        raise Failure(f"{' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET):
        raise OSError(ctypes.get_errno(), "setns")


def deadline_passed(deadline):
    return time.monotonic() > deadline


def nla(kind, data):
    attr = struct.pack("=HH", 4 + len(data), kind) + data
    return attr + b"\0" * (-len(attr) % 4)


def parse_nlas(data):
    attrs, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        attrs[kind & 0x3fff] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return attrs


def addr16(fam, addr):
    return socket.inet_pton(AF[fam], addr).ljust(16, b"\0")


class Xfrm:
    """An XFRM netlink socket in one namespace."""

    def __init__(self, host):
        self.sk = host.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                              NETLINK_XFRM)
        self.sk.bind((0, 0))
        self.sk.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.seq = 0

    def close(self):
        self.sk.close()

    def request(self, kind, payload, ack=True):
        """(errno, extack message, reply payload or None)."""
        self.seq += 1
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        self.sk.send(struct.pack("=IHHII", 16 + len(payload), kind, flags,
                                 self.seq, 0) + payload)
        deadline = time.monotonic() + WAIT
        while not deadline_passed(deadline):
            if not select.select([self.sk], [], [], WAIT)[0]:
                break
            data = self.sk.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, mflags, seq, _ = struct.unpack_from("=IHHII",
                                                                  data, off)
                body = data[off + 16:off + length]
                off += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if mtype != NLMSG_ERROR:
                    return 0, "", body
                err = -struct.unpack_from("=i", body)[0]
                msg = ""
                if mflags & NLM_F_ACK_TLVS:
                    orig = struct.unpack_from("=I", body, 4)[0]
                    skip = 4 + (16 if mflags & NLM_F_CAPPED else
                                (orig + 3) & ~3)
                    tlv = parse_nlas(body[skip:]).get(NLMSGERR_ATTR_MSG)
                    msg = tlv.rstrip(b"\0").decode(errors="replace") \
                        if tlv else ""
                return err, msg, None
        raise Failure(f"no answer to XFRM message {kind:#x}")

    def add_sa(self, fam, src, dst, spi, key, reqid, sa_dir=None,
               replay=None, encap=None, keepalive=None, pcpu=None):
        """(errno, extack message); encap is (type, sport, dport)."""
        plen = PLEN[fam]
        if replay is None:
            replay = 0 if sa_dir == DIR_OUT else 32
        sel = addr16(fam, dst) + addr16(fam, src) + \
            struct.pack("=HHHHHBBB3xiI", 0, 0, 0, 0, AF[fam], plen, plen,
                        0, 0, 0)
        xid = addr16(fam, dst) + struct.pack("!I", spi) + \
            struct.pack("=B3x", socket.IPPROTO_ESP)
        lft = struct.pack("=8Q", XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF,
                          0, 0, 0, 0)
        info = sel + xid + addr16(fam, src) + lft + bytes(32 + 12) + \
            struct.pack("=IIHBBB7x", 0, reqid, AF[fam], 0, replay, 0)
        assert len(info) == USERSA_INFO_LEN
        msg = info + nla(XFRMA_ALG_AEAD,
                         b"rfc4106(gcm(aes))".ljust(64, b"\0") +
                         struct.pack("=II", len(key) * 8, 128) + key)
        if encap:
            msg += nla(XFRMA_ENCAP, struct.pack("=H", encap[0]) +
                       struct.pack("!HH", encap[1], encap[2]) + bytes(18))
        if sa_dir is not None:
            msg += nla(XFRMA_SA_DIR, struct.pack("=B", sa_dir))
        if keepalive is not None:
            msg += nla(XFRMA_NAT_KEEPALIVE_INTERVAL,
                       struct.pack("=I", keepalive))
        if pcpu is not None:
            msg += nla(XFRMA_SA_PCPU, struct.pack("=I", pcpu))
        err, text, _ = self.request(XFRM_MSG_NEWSA, msg)
        return err, text

    def _sa_id(self, fam, dst, spi):
        return addr16(fam, dst) + struct.pack("!I", spi) + \
            struct.pack("=HB1x", AF[fam], socket.IPPROTO_ESP)

    def get_sa(self, fam, dst, spi):
        """(xfrm_usersa_info bytes, attributes) or None if there is none."""
        err, text, body = self.request(XFRM_MSG_GETSA,
                                       self._sa_id(fam, dst, spi), ack=False)
        if err == errno.ESRCH:
            return None
        if err:
            raise Failure(f"GETSA {spi:#x}: {os.strerror(err)} {text}")
        return body[:USERSA_INFO_LEN], parse_nlas(body[USERSA_INFO_LEN:])

    def del_sa(self, fam, dst, spi):
        err, text, _ = self.request(XFRM_MSG_DELSA, self._sa_id(fam, dst, spi))
        if err:
            raise Failure(f"DELSA {spi:#x}: {os.strerror(err)} {text}")

    def packets(self, fam, dst, spi):
        sa = self.get_sa(fam, dst, spi)
        if sa is None:
            raise Failure(f"SA {spi:#x} is gone")
        return struct.unpack_from("=Q", sa[0], CURLFT_PACKETS)[0]


class Host:
    """A network namespace; sockets made by socket() live there."""

    def __init__(self, name):
        self.ns = name
        sh("ip", "netns", "add", name)
        self.fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        self.xfrm = None

    def socket(self, *args):
        setns(self.fd)
        try:
            return socket.socket(*args)
        finally:
            setns(ROOT_NS)

    def ip(self, *args):
        return sh("ip", "-n", self.ns, *args)

    def stat(self, name):
        """A counter of the namespace's /proc/net/xfrm_stat."""
        setns(self.fd)
        try:
            with open("/proc/thread-self/net/xfrm_stat") as f:
                for line in f:
                    key, value = line.split()
                    if key == name:
                        return int(value)
        finally:
            setns(ROOT_NS)
        raise Failure(f"no {name} in xfrm_stat")

    def close(self):
        if self.xfrm:
            self.xfrm.close()
        os.close(self.fd)
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


A = B = None
ENCAP_SOCKS = []


def topology():
    A.ip("link", "add", "veth0", "address", "02:00:00:00:78:01", "type",
         "veth", "peer", "name", "veth0", "address", "02:00:00:00:78:02",
         "netns", B.ns)
    for host, mine, peer_mac in ((A, 0, "02:00:00:00:78:02"),
                                 (B, 1, "02:00:00:00:78:01")):
        host.ip("link", "set", "lo", "up")
        for fam, addrs in ADDR.items():
            host.ip("addr", "add",
                    f"{addrs[mine]}/{24 if fam == 4 else 64}",
                    "dev", "veth0", "nodad")
            # Neither ARP nor ND may depend on the policies.
            host.ip("neigh", "replace", addrs[1 - mine], "lladdr", peer_mac,
                    "dev", "veth0", "nud", "permanent")
        host.ip("link", "set", "veth0", "up")
        # Loads xfrm_user if needed.
        host.ip("xfrm", "state", "flush")
        host.xfrm = Xfrm(host)
        # The IKE daemon's ESP-in-UDP socket (RFC 3948).
        for fam, addrs in ADDR.items():
            s = host.socket(AF[fam], socket.SOCK_DGRAM)
            s.bind((addrs[mine], IKE_PORT))
            s.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
            ENCAP_SOCKS.append(s)


def flush():
    for host in (A, B):
        host.ip("xfrm", "policy", "flush")
        host.ip("xfrm", "state", "flush")


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Failure("TCP connection closed")
        buf += chunk
    return buf


class TcpConn:
    """RFC 9329: A connects to B's port 4500, sends the IKETCP prefix, and
    both ends attach the espintcp ULP."""

    def __init__(self, fam):
        a, b = ADDR[fam]
        lsn = B.socket(AF[fam], socket.SOCK_STREAM)
        self.a = self.b = None
        try:
            lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsn.bind((b, IKE_PORT))
            lsn.listen(1)
            lsn.settimeout(WAIT)
            self.a = A.socket(AF[fam], socket.SOCK_STREAM)
            self.a.settimeout(WAIT)
            self.a.connect((b, IKE_PORT))
            self.b, _ = lsn.accept()
            self.b.settimeout(WAIT)
        finally:
            lsn.close()
        self.a.sendall(b"IKETCP")
        if recv_exact(self.b, 6) != b"IKETCP":
            raise Failure("no IKETCP prefix")
        self.a.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"espintcp")
        self.b.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"espintcp")
        self.a_port = self.a.getsockname()[1]

    def close(self):
        for s in (self.a, self.b):
            if s:
                s.close()


def encaps(kind, conn):
    """Encapsulation of the SAs from A to B and from B to A."""
    if kind == "udp":
        return ((UDP_ENCAP_ESPINUDP, IKE_PORT, IKE_PORT),
                (UDP_ENCAP_ESPINUDP, IKE_PORT, IKE_PORT))
    if kind == "tcp":
        return ((TCP_ENCAP_ESPINTCP, conn.a_port, IKE_PORT),
                (TCP_ENCAP_ESPINTCP, IKE_PORT, conn.a_port))
    return None, None


def policies(fam):
    """UDP to B's test port goes through SAs of reqid 1, the answers
    through reqid 2; nothing else is protected."""
    a, b = ADDR[fam]
    plen = PLEN[fam]
    for host, d, src, dst, port, reqid in (
            (A, "out", a, b, ("dport", str(APP_PORT)), 1),
            (B, "in", a, b, ("dport", str(APP_PORT)), 1),
            (B, "out", b, a, ("sport", str(APP_PORT)), 2),
            (A, "in", b, a, ("sport", str(APP_PORT)), 2)):
        host.ip("xfrm", "policy", "add", "src", f"{src}/{plen}",
                "dst", f"{dst}/{plen}", "proto", "udp", *port, "dir", d,
                "tmpl", "src", src, "dst", dst, "proto", "esp",
                "reqid", str(reqid), "mode", "transport")


def must_add(host, *args, **kw):
    err, text = host.xfrm.add_sa(*args, **kw)
    if err:
        raise Failure(f"SA {args[3]:#x} {kw} refused on {host.ns}: "
                      f"{os.strerror(err)} ({text or 'no message'})")


def install(fam, spi_ab, spi_ba, enc, out_kw=None, in_kw=None):
    """One SA each way, out on the sender and in on the receiver; extra
    attributes for the out SAs and in SAs."""
    a, b = ADDR[fam]
    for src_host, dst_host, src, dst, spi, reqid, e in (
            (A, B, a, b, spi_ab, 1, enc[0]), (B, A, b, a, spi_ba, 2, enc[1])):
        key = os.urandom(20)
        must_add(src_host, fam, src, dst, spi, key, reqid, sa_dir=DIR_OUT,
                 encap=e, **(out_kw or {}))
        must_add(dst_host, fam, src, dst, spi, key, reqid, sa_dir=DIR_IN,
                 encap=e, **(in_kw or {}))


def recv_wait(sock):
    if not select.select([sock], [], [], WAIT)[0]:
        raise Failure("datagram did not arrive")
    return sock.recvfrom(65536)


def round_trip(fam):
    """A datagram A -> B through the policies, and B's answer back."""
    a, b = ADDR[fam]
    srv = B.socket(AF[fam], socket.SOCK_DGRAM)
    cli = A.socket(AF[fam], socket.SOCK_DGRAM)
    with srv, cli:
        srv.bind((b, APP_PORT))
        cli.bind((a, 0))
        payload = os.urandom(300)
        cli.sendto(payload, (b, APP_PORT))
        data, peer = recv_wait(srv)
        if data != payload or peer[0] != a:
            raise Failure(f"B received {len(data)} bytes from {peer[0]}, "
                          "not what A sent")
        srv.sendto(b"re:" + payload[::-1], peer)
        data, peer = recv_wait(cli)
        if data != b"re:" + payload[::-1] or peer[:2] != (b, APP_PORT):
            raise Failure(f"A received {len(data)} bytes from {peer[0]}, "
                          "not B's answer")


def counted(fam, expect, what):
    """Run what(); expect: {(host, dst, spi): packets it must count}."""
    before = {k: k[0].xfrm.packets(fam, k[1], k[2]) for k in expect}
    what()
    for k, n in expect.items():
        got = k[0].xfrm.packets(fam, k[1], k[2]) - before[k]
        if got != n:
            raise Failure(f"SA {k[2]:#x} on {k[0].ns} counted {got} "
                          f"packets, want {n}")


def traffic(fam, spi_ab, spi_ba):
    a, b = ADDR[fam]
    counted(fam, {(A, b, spi_ab): 1, (B, b, spi_ab): 1,
                  (B, a, spi_ba): 1, (A, a, spi_ba): 1},
            lambda: round_trip(fam))


def expect_attr(host, fam, dst, spi, kind, fmt, want):
    sa = host.xfrm.get_sa(fam, dst, spi)
    if sa is None:
        raise Failure(f"SA {spi:#x} missing on {host.ns}")
    raw = sa[1].get(kind)
    got = struct.unpack(fmt, raw[:struct.calcsize(fmt)])[0] if raw else None
    if got != want:
        raise Failure(f"SA {spi:#x} on {host.ns} reports attribute {kind} "
                      f"= {got}, want {want}")


def expect_refused(host, fam, src, dst, spi, want_errno, **kw):
    err, text = host.xfrm.add_sa(fam, src, dst, spi, os.urandom(20), 1, **kw)
    if err != want_errno or host.xfrm.get_sa(fam, dst, spi) is not None:
        raise Failure(f"SA {kw}: {os.strerror(err) if err else 'accepted'}"
                      f" ({text}), want {errno.errorcode[want_errno]} "
                      "and no SA")
    log(f"refused as the core says: {kw} ({text})")


def expect_accepted(host, fam, src, dst, spi, **kw):
    err, text = host.xfrm.add_sa(fam, src, dst, spi, os.urandom(20), 1, **kw)
    if err:
        raise Failure(f"SA {kw} refused: {os.strerror(err)} ({text})")
    host.xfrm.del_sa(fam, dst, spi)


# The cases. Each gets the family and returns normally or raises Failure.

def case_dir_traffic(fam, kind):
    conn = TcpConn(fam) if kind == "tcp" else None
    try:
        enc = encaps(kind, conn)
        install(fam, 0x1000, 0x2000, enc)
        policies(fam)
        a, b = ADDR[fam]
        expect_attr(A, fam, b, 0x1000, XFRMA_SA_DIR, "=B", DIR_OUT)
        expect_attr(B, fam, b, 0x1000, XFRMA_SA_DIR, "=B", DIR_IN)
        traffic(fam, 0x1000, 0x2000)
        flush()
    finally:
        if conn:
            conn.close()


def poll_counter(host, name, above):
    deadline = time.monotonic() + WAIT
    while host.stat(name) <= above:
        if deadline_passed(deadline):
            raise Failure(f"{name} on {host.ns} stayed at {above}")
        time.sleep(0.05)


def case_dir_rules(fam):
    """The core's SA_DIR rules, with each encapsulation our type accepts."""
    a, b = ADDR[fam]
    for kind in ("plain", "udp", "tcp"):
        conn = TcpConn(fam) if kind == "tcp" else None
        try:
            enc = encaps(kind, conn)
            log(f"{kind}: an out SA has no replay window")
            expect_refused(A, fam, a, b, 0x3000, errno.EINVAL, sa_dir=DIR_OUT,
                           replay=32, encap=enc[0])
            expect_accepted(A, fam, a, b, 0x3000, sa_dir=DIR_IN, replay=32,
                            encap=enc[0])
            expect_accepted(A, fam, a, b, 0x3000, replay=32, encap=enc[0])
            expect_accepted(A, fam, a, b, 0x3000, sa_dir=DIR_OUT, replay=0,
                            encap=enc[0])
            log(f"{kind}: direction 3 does not exist (netlink range)")
            expect_refused(A, fam, a, b, 0x3000, errno.ERANGE, sa_dir=3,
                           encap=enc[0])

            log(f"{kind}: an out SA where the receiver wants an in SA")
            install(fam, 0x1000, 0x2000, enc)
            policies(fam)
            key = os.urandom(20)
            B.xfrm.del_sa(fam, b, 0x1000)
            A.xfrm.del_sa(fam, b, 0x1000)
            must_add(A, fam, a, b, 0x1000, key, 1, sa_dir=DIR_OUT,
                     encap=enc[0])
            must_add(B, fam, a, b, 0x1000, key, 1, sa_dir=DIR_OUT,
                     encap=enc[0])
            before = B.stat("XfrmInStateDirError")
            with B.socket(AF[fam], socket.SOCK_DGRAM) as srv, \
                    A.socket(AF[fam], socket.SOCK_DGRAM) as cli:
                srv.bind((b, APP_PORT))
                cli.sendto(b"x" * 100, (b, APP_PORT))
                poll_counter(B, "XfrmInStateDirError", before)
                if select.select([srv], [], [], 0)[0]:
                    raise Failure("B delivered a packet of an out SA")
            if B.xfrm.packets(fam, b, 0x1000):
                raise Failure("B's out SA counted an inbound packet")

            log(f"{kind}: an in SA where the sender wants an out SA")
            A.xfrm.del_sa(fam, b, 0x1000)
            must_add(A, fam, a, b, 0x1000, key, 1, sa_dir=DIR_IN,
                     encap=enc[0])
            before = A.stat("XfrmOutStateDirError")
            with A.socket(AF[fam], socket.SOCK_DGRAM) as cli:
                try:
                    cli.sendto(b"x" * 100, (b, APP_PORT))
                    raise Failure("sent through an in SA")
                except OSError as e:
                    log(f"send: {e.strerror}")
            poll_counter(A, "XfrmOutStateDirError", before)
            flush()
        finally:
            if conn:
                conn.close()


def keepalives(sock, fam, count):
    """Wait for count NAT keepalives from A's port 4500 to B's."""
    a, b = ADDR[fam]
    seen = 0
    deadline = time.monotonic() + WAIT
    while seen < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise Failure(f"{seen} NAT keepalives, want {count}")
        pkt, where = sock.recvfrom(65536)
        if where[2] == PACKET_OUTGOING:
            continue
        if fam == 4:
            if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 17:
                continue
            src, dst = pkt[12:16], pkt[16:20]
            udp = pkt[(pkt[0] & 15) * 4:]
        else:
            if len(pkt) < 40 or pkt[0] >> 4 != 6 or pkt[6] != 17:
                continue
            src, dst = pkt[8:24], pkt[24:40]
            udp = pkt[40:]
        sport, dport, length, check = struct.unpack_from("!HHHH", udp)
        if (src, dst, sport) != (socket.inet_pton(AF[fam], a),
                                 socket.inet_pton(AF[fam], b), IKE_PORT):
            continue
        if udp[8:] != b"\xff" or length != 9 or dport != IKE_PORT:
            raise Failure(f"not a NAT keepalive: {udp.hex()}")
        if check or fam == 6:
            pseudo = src + dst + struct.pack("!HH", 17, length)
            if inet_csum(pseudo + udp[:length]) not in (0, 0xffff):
                raise Failure(f"NAT keepalive with a bad checksum {check:#x}")
        seen += 1


def inet_csum(data):
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def case_keepalive_udp(fam):
    a, b = ADDR[fam]
    tap = B.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                   socket.htons(ETH_P_ALL))
    with tap:
        tap.bind(("veth0", ETH_P_ALL))
        install(fam, 0x1000, 0x2000, encaps("udp", None),
                out_kw={"keepalive": 1})
        expect_attr(A, fam, b, 0x1000, XFRMA_NAT_KEEPALIVE_INTERVAL, "=I", 1)
        keepalives(tap, fam, 2)
    policies(fam)
    traffic(fam, 0x1000, 0x2000)
    flush()


def case_keepalive_rules(fam):
    """Only out SAs with ESP-in-UDP send keepalives: the core refuses the
    attribute elsewhere, after our init_state() ran for TCP."""
    a, b = ADDR[fam]
    conn = TcpConn(fam)
    try:
        enc = encaps("tcp", conn)
        expect_refused(A, fam, a, b, 0x1000, errno.EINVAL, sa_dir=DIR_OUT,
                       encap=enc[0], keepalive=1)
        udp = encaps("udp", None)[0]
        expect_refused(A, fam, a, b, 0x1000, errno.EINVAL, sa_dir=DIR_IN,
                       encap=udp, keepalive=1)
        expect_refused(A, fam, a, b, 0x1000, errno.EINVAL, sa_dir=DIR_OUT,
                       keepalive=1)
        # The connection and our TCP state are intact.
        install(fam, 0x1000, 0x2000, enc)
        policies(fam)
        traffic(fam, 0x1000, 0x2000)
        flush()
    finally:
        conn.close()


def possible_cpus():
    with open("/sys/devices/system/cpu/possible") as f:
        return int(f.read().strip().split(",")[-1].split("-")[-1]) + 1


def case_pcpu_traffic(fam, kind):
    """One out SA per CPU each way: a packet sent on CPU n goes through the
    SAs for CPU n, and only them. The in SAs carry the number too."""
    a, b = ADDR[fam]
    cpus = sorted(c for c in os.sched_getaffinity(0) if c < possible_cpus())
    conn = TcpConn(fam) if kind == "tcp" else None
    saved = os.sched_getaffinity(0)
    try:
        enc = encaps(kind, conn)
        for cpu in cpus:
            install(fam, 0x1000 + cpu, 0x2000 + cpu, enc,
                    out_kw={"pcpu": cpu}, in_kw={"pcpu": cpu})
            expect_attr(A, fam, b, 0x1000 + cpu, XFRMA_SA_PCPU, "=I", cpu)
            expect_attr(B, fam, b, 0x1000 + cpu, XFRMA_SA_PCPU, "=I", cpu)
        policies(fam)
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            expect = {}
            for c in cpus:
                n = 1 if c == cpu else 0
                expect.update({(A, b, 0x1000 + c): n, (B, b, 0x1000 + c): n,
                               (B, a, 0x2000 + c): n, (A, a, 0x2000 + c): n})
            counted(fam, expect, lambda: round_trip(fam))
        log(f"CPUs {cpus}: each used its own SAs")
        flush()
    finally:
        os.sched_setaffinity(0, saved)
        if conn:
            conn.close()


def case_pcpu_rules(fam):
    a, b = ADDR[fam]
    n = possible_cpus()
    for sa_dir in (DIR_OUT, DIR_IN):
        err, text = A.xfrm.add_sa(fam, a, b, 0x1000, os.urandom(20), 1,
                                  sa_dir=sa_dir, pcpu=n)
        if not err or A.xfrm.get_sa(fam, b, 0x1000) is not None:
            raise Failure(f"SA for CPU {n} of {n}: "
                          f"{os.strerror(err) if err else 'no error'}, "
                          "want refused and no SA")
        log(f"CPU {n} of {n} refused: {os.strerror(err)} ({text})")
        expect_accepted(A, fam, a, b, 0x1000, sa_dir=sa_dir, pcpu=n - 1)


CASES = []
for _fam in (4, 6):
    for _kind in ("plain", "udp", "tcp"):
        CASES.append((f"ipv{_fam}_dir_{_kind}", "dir", case_dir_traffic,
                      (_fam, _kind)))
    CASES.append((f"ipv{_fam}_dir_rules", "dir", case_dir_rules, (_fam,)))
    CASES.append((f"ipv{_fam}_keepalive_udp", "keepalive",
                  case_keepalive_udp, (_fam,)))
    CASES.append((f"ipv{_fam}_keepalive_refused", "keepalive",
                  case_keepalive_rules, (_fam,)))
    for _kind in ("plain", "udp", "tcp"):
        CASES.append((f"ipv{_fam}_pcpu_{_kind}", "pcpu", case_pcpu_traffic,
                      (_fam, _kind)))
    CASES.append((f"ipv{_fam}_pcpu_rules", "pcpu", case_pcpu_rules, (_fam,)))


def kernel_at_least(major, minor):
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) >= (major, minor)


def probe():
    """Which attributes the kernel knows: an SA added with one reports it
    back only then (older kernels skip unknown attributes). Returns
    {feature: None if known, else the reason to skip}."""
    a, b = ADDR[4]
    # The keepalive probe uses a 1 s interval: the kernel's keepalive work
    # (xfrm_nat_keepalive_state_updated()) is queued with
    # schedule_delayed_work(), which leaves a pending run where it is. Had
    # the work seen a probe SA of 3600 s before it was deleted (as under
    # single-threaded TCG), the keepalive cases' SAs would wait an hour.
    tries = {
        "dir": ({"sa_dir": DIR_IN}, XFRMA_SA_DIR, "XFRMA_SA_DIR", (6, 10)),
        "keepalive": ({"sa_dir": DIR_OUT, "keepalive": 1,
                       "encap": (UDP_ENCAP_ESPINUDP, IKE_PORT, 4999)},
                      XFRMA_NAT_KEEPALIVE_INTERVAL,
                      "XFRMA_NAT_KEEPALIVE_INTERVAL", (6, 10)),
        "pcpu": ({"sa_dir": DIR_OUT, "pcpu": 0}, XFRMA_SA_PCPU,
                 "XFRMA_SA_PCPU", (6, 13)),
    }
    result = {}
    for feature, (kw, attr, name, since) in tries.items():
        if result.get("dir"):
            result[feature] = result["dir"]
            continue
        err, text = A.xfrm.add_sa(4, a, b, 0xfff0, os.urandom(20), 9, **kw)
        if err:
            # Refused rather than ignored: fine on an old kernel only.
            if kernel_at_least(*since):
                raise Failure(f"probe SA with {name} refused: "
                              f"{os.strerror(err)} ({text})")
            result[feature] = f"kernel has no {name}"
            continue
        sa = A.xfrm.get_sa(4, b, 0xfff0)
        A.xfrm.del_sa(4, b, 0xfff0)
        result[feature] = None if sa and attr in sa[1] else \
            f"kernel has no {name}"
    return result


def main():
    global A, B
    if os.geteuid():
        print("1..0 # SKIP needs root")
        return 4

    print("TAP version 13")
    print(f"1..{len(CASES)}", flush=True)
    failed = 0
    hosts = []
    try:
        A = Host(f"espt-sa-a-{TAG}")
        hosts.append(A)
        B = Host(f"espt-sa-b-{TAG}")
        hosts.append(B)
        topology()
        skip = probe()
        for num, (name, feature, fn, args) in enumerate(CASES, 1):
            if skip[feature]:
                print(f"ok {num} {name} # SKIP {skip[feature]}", flush=True)
                continue
            if not re.search(os.environ.get("ESPINTCP_CASES", "."), name):
                print(f"ok {num} {name} # SKIP not selected", flush=True)
                continue
            try:
                fn(*args)
                print(f"ok {num} {name}", flush=True)
            except Exception as e:	# noqa: BLE001 - any is a failure
                if isinstance(e, Failure):
                    log(e)
                else:
                    for line in traceback.format_exc().splitlines():
                        log(line)
                print(f"not ok {num} {name}", flush=True)
                failed += 1
                try:
                    flush()
                except Failure as e2:
                    log(f"cleanup: {e2}")
    except (Failure, OSError) as e:
        log(f"set-up: {e}")
        failed += 1
    finally:
        for s in ENCAP_SOCKS:
            s.close()
        for h in hosts:
            h.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
