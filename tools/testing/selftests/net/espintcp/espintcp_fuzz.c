// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_fuzz: a bounded, reproducible fuzzer of the espintcp ULP and the
 * ESP types behind it (issue #14, section 2).
 *
 *   espintcp_fuzz [stream|calls|lifetime|all] [--seed S] [--frames N]
 *                 [--calls N] [--conns N] [--seconds S] [--session K]
 *                 [--ko-dir DIR] [--replay FILE]
 *
 * stream    a raw peer writes valid and mutated RFC 9329 byte streams into
 *           an espintcp socket (every Length 0..65535 over a run, random
 *           splits, keepalives, markers, ESP for live, dead and unknown SAs,
 *           truncated ESP, garbage after IKETCP) while the user side reads,
 *           peeks, polls and closes. An independent model of the parser
 *           says which IKE messages must, may or must not be delivered and
 *           which ESP packets must come out of XFRM.
 * calls     random sequences of socket calls on espintcp sockets (send and
 *           receive with all flags, sendfile, splice, sockopts, shutdown,
 *           close, dup, fork) while SAs using them are added, updated,
 *           moved to new ports and deleted, with ESP in both directions.
 *           The raw peer checks that the stream it receives stays framed.
 * lifetime  thousands of connections opened and torn down under traffic,
 *           network namespaces deleted under live sockets and SAs, and rmmod
 *           tried with live sockets and SAs (refused; allowed once gone).
 *
 * The seed is printed first; every unit of work (a stream session, a call
 * sequence, a batch of connections) has its own seed derived from it, so
 * `--seed S --session K` replays one, and `stream --replay FILE` writes a
 * saved stream again. Output is TAP, one line per mode. On a failure the
 * input that led to it (the stream bytes, the call trace) is saved under
 * $ESPINTCP_FUZZ_OUT (default /tmp) and its path printed. A mode that runs
 * past its time bound is killed and reported as hung. --ko-dir is where
 * espintcp.ko, esp4.ko and esp6.ko are, for the rmmod checks (skipped
 * without it); they are always loaded again before the program ends.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sockios.h>
#include <linux/xfrm.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "espintcp_lib.h"
#include "xfrm_nl.h"

#ifndef SIOCINQ
#define SIOCINQ		FIONREAD
#endif
#ifndef SIOCOUTQ
#define SIOCOUTQ	TIOCOUTQ
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY	0x4000000
#endif
#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif

#define MAX_MSG		65535		/* on the wire, Length included */
#define MAX_IKE		(MAX_MSG - 2)	/* what send() takes */
#define STREAM_MAX	(8 << 20)	/* bytes of one session kept for replay */
#define TRACE_MAX	(256 << 10)
#define UDP_SINK	4242		/* decapsulated ESP arrives here */
#define UDP_POL		7000		/* traffic to these ports goes out as ESP */
#define ESP_MAGIC	0x45465a31	/* "EFZ1" */
#define IKE_MAGIC	0x494b4531	/* "IKE1" */

/* ------------------------------------------------------------------ */
/* State the parent keeps when a mode dies or hangs. */

struct shared {
	char mode[16];
	unsigned long long seed;		/* seed of the run */
	unsigned long long unit;		/* session, sequence or batch in progress */
	unsigned long long unit_seed;
	unsigned long long frames, calls, conns, lengths_seen;
	unsigned long long esp_sent, esp_delivered, ike_sent, ike_delivered;
	unsigned long long esp_out_seen, esp_in_seen;
	int failed;
	char why[512];
	size_t stream_len;
	size_t trace_len;
	char trace[TRACE_MAX];
	uint8_t stream[STREAM_MAX];
};

static struct shared *sh;
static unsigned long long deadline_ns, mode_start_ns;
static const char *ko_dir;
static bool in_child_proc;	/* a fork() of a mode (calls: fork op) */

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static bool out_of_time(void)
{
	return now_ns() >= deadline_ns;
}

static void trace(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (in_child_proc || sh->trace_len >= TRACE_MAX - 256)
		return;
	sh->trace_len += snprintf(sh->trace + sh->trace_len, 16, "%8.3f ",
				  (now_ns() - mode_start_ns) / 1e9);
	va_start(ap, fmt);
	n = vsnprintf(sh->trace + sh->trace_len, TRACE_MAX - sh->trace_len,
		      fmt, ap);
	va_end(ap);
	if (n > 0)
		sh->trace_len += n < (int)(TRACE_MAX - sh->trace_len) ? n :
				 TRACE_MAX - sh->trace_len - 1;
	if (sh->trace_len < TRACE_MAX - 1)
		sh->trace[sh->trace_len++] = '\n';
}

/* An oracle violation: record why, and end this process with status 1. */
static void fail(const char *fmt, ...)
{
	va_list ap;

	if (!sh->failed) {
		va_start(ap, fmt);
		vsnprintf(sh->why, sizeof(sh->why), fmt, ap);
		va_end(ap);
		sh->failed = 1;
	}
	trace("FAIL: %s", sh->why);
	_exit(1);
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

/* ------------------------------------------------------------------ */
/* Reproducible randomness: splitmix64. */

struct rng {
	unsigned long long s;
};

static unsigned long long rnext(struct rng *r)
{
	unsigned long long z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint32_t rnd(struct rng *r, uint32_t n)
{
	return n ? rnext(r) % n : 0;
}

/* [lo, hi] */
static uint32_t rrange(struct rng *r, uint32_t lo, uint32_t hi)
{
	return lo + rnd(r, hi - lo + 1);
}

static bool chance(struct rng *r, unsigned int per_mille)
{
	return rnd(r, 1000) < per_mille;
}

static unsigned long long mix(unsigned long long seed, unsigned long long k)
{
	struct rng r = { seed ^ (k * 0xd1b54a32d192ed03ULL) };

	rnext(&r);
	return rnext(&r);
}

static void rfill(struct rng *r, uint8_t *p, size_t n)
{
	while (n--)
		*p++ = rnext(r);
}

/* ------------------------------------------------------------------ */
/* Small helpers. */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint16_t get16(const uint8_t *p)
{
	return p[0] << 8 | p[1];
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

/* Payload bytes derived from a key and the offset: checkable from any prefix. */
static uint8_t pat(uint32_t key, uint32_t i)
{
	return (uint8_t)(key * 0x9e3779b1u + i * 131 + (i >> 8) * 7);
}

static void set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static void set_timeo(int fd, int opt, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

static int link_up_lo(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int ret;

	if (fd < 0)
		return -1;
	ret = ioctl(fd, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	if (!ret)
		ret = ioctl(fd, SIOCSIFFLAGS, &ifr);
	close(fd);
	return ret;
}

/* A fresh network namespace with loopback up, for this process. */
static void new_netns(void)
{
	CHECK(!unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET): %s",
	      strerror(errno));
	CHECK(!link_up_lo(), "lo up: %s", strerror(errno));
}

static unsigned long long proc_counter(const char *file, const char *name)
{
	char line[4096], key[128];
	unsigned long long v;
	unsigned long long ret = 0;
	FILE *f = fopen(file, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %llu", key, &v) == 2 && !strcmp(key, name))
			ret += v;
	fclose(f);
	return ret;
}

#define SEP "\n "

/* Udp: InErrors/RcvbufErrors from /proc/net/snmp (a header and a values line). */
static unsigned long long udp_drops(void)
{
	char hdr[1024], val[1024];
	unsigned long long ret = 0;
	FILE *f = fopen("/proc/thread-self/net/snmp", "r");

	if (!f)
		return 0;
	while (fgets(hdr, sizeof(hdr), f) && fgets(val, sizeof(val), f)) {
		char *hs, *vs, *h, *v;
		int i = 0;

		if (strncmp(hdr, "Udp:", 4))
			continue;
		h = strtok_r(hdr, "\n ", &hs);
		v = strtok_r(val, "\n ", &vs);
		while (h && v) {
			if (!strcmp(h, "InErrors") || !strcmp(h, "RcvbufErrors"))
				ret += strtoull(v, NULL, 10);
			h = strtok_r(NULL, "\n ", &hs);
			v = strtok_r(NULL, "\n ", &vs);
			i++;
		}
		break;
	}
	fclose(f);
	return ret + proc_counter("/proc/thread-self/net/snmp6", "Udp6InErrors") +
	       proc_counter("/proc/thread-self/net/snmp6", "Udp6RcvbufErrors");
}

/* XFRM drops of well-formed packets for resource reasons. */
static unsigned long long xfrm_resource_drops(void)
{
	return read_xfrm_counter("XfrmInError") +
	       read_xfrm_counter("XfrmInBufferError");
}

/* ------------------------------------------------------------------ */
/* XFRM netlink: SAs and policies, as a key manager installs them. */

static int nl_open(void)
{
	int fd = xfrm_nl_open();

	if (fd < 0)
		fail("xfrm netlink socket: %s", strerror(errno));
	set_timeo(fd, SO_RCVTIMEO, WAIT_MS);
	return fd;
}

enum sa_alg { ALG_NULL, ALG_GCM };

struct sa {
	int family;
	xfrm_address_t src, dst;
	uint32_t spi, reqid;
	uint16_t sport, dport;	/* encapsulation ports */
	uint16_t encap;		/* TCP_ENCAP_ESPINTCP, UDP_ENCAP_ESPINUDP, 0 */
	enum sa_alg alg;
};

static void addr_of(int family, xfrm_address_t *a)
{
	memset(a, 0, sizeof(*a));
	if (family == AF_INET)
		a->a4 = htonl(INADDR_LOOPBACK);
	else
		a->in6 = in6addr_loopback;
}

/* XFRM_MSG_NEWSA or XFRM_MSG_UPDSA; 0 or -errno. */
static int sa_put(int nl, const struct sa *s, int type)
{
	struct xfrm_usersa_info *p;
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, type, sizeof(*p));
	p = NLMSG_DATA(&r.nh);
	p->family = s->family;
	p->saddr = s->src;
	p->id.daddr = s->dst;
	p->id.spi = htonl(s->spi);
	p->id.proto = IPPROTO_ESP;
	p->reqid = s->reqid;
	p->mode = XFRM_MODE_TRANSPORT;
	p->replay_window = 0;	/* reordering across CPUs must not drop */
	xfrm_nl_no_limits(&p->lft);

	if (s->alg == ALG_GCM) {
		struct xfrm_algo_aead *a;

		a = xfrm_nl_attr(&r, XFRMA_ALG_AEAD, NULL, sizeof(*a) + 20);
		memset(a, 0, sizeof(*a) + 20);
		strcpy(a->alg_name, "rfc4106(gcm(aes))");
		a->alg_key_len = 160;
		a->alg_icv_len = 128;
		memset(a->alg_key, 0x5a, 20);
	} else {
		/* No key, no integrity: the peer seals ESP by hand. */
		struct xfrm_algo *a;

		a = xfrm_nl_attr(&r, XFRMA_ALG_CRYPT, NULL, sizeof(*a));
		memset(a, 0, sizeof(*a));
		strcpy(a->alg_name, "ecb(cipher_null)");
	}
	if (s->encap) {
		struct xfrm_encap_tmpl enc = {
			.encap_type = s->encap,
			.encap_sport = htons(s->sport),
			.encap_dport = htons(s->dport),
		};

		xfrm_nl_attr(&r, XFRMA_ENCAP, &enc, sizeof(enc));
	}
	return xfrm_nl_transact(nl, &r);
}

static int sa_del(int nl, const struct sa *s)
{
	return xfrm_nl_sa_del(nl, s->family, &s->src, &s->dst, s->spi);
}

/* Outbound UDP from loopback to loopback port @dport goes through @reqid. */
static int pol_add(int nl, int family, uint16_t dport, uint32_t reqid)
{
	struct xfrm_userpolicy_info *pi;
	struct xfrm_user_tmpl t = { 0 };
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, XFRM_MSG_NEWPOLICY, sizeof(*pi));
	pi = NLMSG_DATA(&r.nh);
	pi->sel.family = family;
	addr_of(family, &pi->sel.saddr);
	addr_of(family, &pi->sel.daddr);
	pi->sel.prefixlen_s = family == AF_INET ? 32 : 128;
	pi->sel.prefixlen_d = pi->sel.prefixlen_s;
	pi->sel.proto = IPPROTO_UDP;
	pi->sel.dport = htons(dport);
	pi->sel.dport_mask = 0xffff;
	pi->dir = XFRM_POLICY_OUT;
	pi->action = XFRM_POLICY_ALLOW;
	xfrm_nl_no_limits(&pi->lft);
	t.family = family;
	t.id.proto = IPPROTO_ESP;
	addr_of(family, &t.id.daddr);
	addr_of(family, &t.saddr);
	t.reqid = reqid;
	t.mode = XFRM_MODE_TRANSPORT;
	t.aalgos = ~0U;
	t.ealgos = ~0U;
	t.calgos = ~0U;
	xfrm_nl_attr(&r, XFRMA_TMPL, &t, sizeof(t));
	return xfrm_nl_transact(nl, &r);
}

/* ------------------------------------------------------------------ */
/* Connections over loopback: a raw peer (TCP Originator) and the ULP. */

struct conn {
	int family;
	int raw, ulp;
	uint16_t raw_port, ulp_port;
};

static int lsn[2] = { -1, -1 };	/* AF_INET, AF_INET6 listeners */

static int fam_idx(int family)
{
	return family == AF_INET6;
}

static socklen_t loop_addr(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons(port);
		return sizeof(*a);
	}
	((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
	((struct sockaddr_in6 *)ss)->sin6_addr = in6addr_loopback;
	((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	return sizeof(struct sockaddr_in6);
}

static uint16_t port_of(int fd, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (peer ? getpeername(fd, (void *)&ss, &len) :
		   getsockname(fd, (void *)&ss, &len))
		return 0;
	return ntohs(ss.ss_family == AF_INET ?
		     ((struct sockaddr_in *)&ss)->sin_port :
		     ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void listeners(void)
{
	int i, one = 1;

	for (i = 0; i < 2; i++) {
		int family = i ? AF_INET6 : AF_INET;
		struct sockaddr_storage ss;
		socklen_t len = loop_addr(family, 4500, &ss);

		lsn[i] = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(lsn[i] >= 0, "listener socket: %s", strerror(errno));
		setsockopt(lsn[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		CHECK(!xfrm_bypass(lsn[i], family), "listener bypass: %s",
		      strerror(errno));
		CHECK(!bind(lsn[i], (void *)&ss, len) && !listen(lsn[i], 512),
		      "listen: %s", strerror(errno));
	}
}

/*
 * Connect, send IKETCP (and @early bytes behind it), read the prefix on the
 * accepted socket and attach. @rcvbuf > 0 is set on the ULP side first.
 */
static int conn_open(struct conn *c, int family, const uint8_t *early,
		     size_t early_len, int rcvbuf)
{
	struct sockaddr_storage ss;
	socklen_t len = loop_addr(family, 4500, &ss);
	uint8_t prefix[6];
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->family = family;
	c->ulp = -1;
	c->raw = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->raw < 0)
		return -1;
	setsockopt(c->raw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (xfrm_bypass(c->raw, family) || connect(c->raw, (void *)&ss, len))
		goto fail;
	c->ulp = accept4(lsn[fam_idx(family)], NULL, NULL, SOCK_CLOEXEC);
	if (c->ulp < 0 || xfrm_bypass(c->ulp, family))
		goto fail;
	if (rcvbuf > 0)
		setsockopt(c->ulp, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (write_all(c->raw, "IKETCP", 6) ||
	    (early_len && write_all(c->raw, early, early_len)))
		goto fail;
	if (read_all(c->ulp, prefix, 6) || memcmp(prefix, "IKETCP", 6))
		goto fail;
	if (attach(c->ulp))
		goto fail;
	c->raw_port = port_of(c->raw, false);
	c->ulp_port = port_of(c->ulp, false);
	/* Blocking calls end: a fuzzer that waits does nothing. */
	set_timeo(c->ulp, SO_RCVTIMEO, 100);
	set_timeo(c->ulp, SO_SNDTIMEO, 1000);
	set_nonblock(c->raw, true);
	return 0;
fail:
	if (c->ulp >= 0)
		close(c->ulp);
	close(c->raw);
	c->raw = -1;
	c->ulp = -1;
	return -1;
}

static void close_rst(int fd)
{
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
	close(fd);
}

/* UDP socket on loopback:@port, large buffer, non-blocking. */
static int udp_sink(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = loop_addr(family, port, &ss);
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int big = 8 << 20;

	CHECK(fd >= 0, "udp socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	CHECK(!bind(fd, (void *)&ss, len), "udp bind %u: %s", port,
	      strerror(errno));
	return fd;
}

/* ------------------------------------------------------------------ */
/*
 * ESP sealed by hand for a null-cipher, no-integrity transport SA: SPI,
 * sequence number, a UDP datagram for UDP_SINK, RFC 4303 padding to 4 bytes,
 * pad length, next header 17. The datagram's payload identifies it.
 */

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		sum += p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += p[n - 1] << 8;
	return sum;
}

static void udp_csum(int family, uint8_t *udp, size_t len)
{
	uint32_t sum = IPPROTO_UDP + len;
	xfrm_address_t a;
	uint16_t c;

	addr_of(family, &a);
	sum = csum_add(sum, (void *)&a, family == AF_INET ? 4 : 16);
	sum = csum_add(sum, (void *)&a, family == AF_INET ? 4 : 16);
	udp[6] = 0;
	udp[7] = 0;
	c = csum_fold(csum_add(sum, udp, len));
	put16(udp + 6, c ? c : 0xffff);
}

/* The datagram's payload: magic, session, id, length, then pattern. */
#define ESP_PL_HDR	16

static void esp_payload(uint8_t *p, size_t n, uint32_t sess, uint32_t id)
{
	size_t i;

	put32(p, ESP_MAGIC);
	put32(p + 4, sess);
	put32(p + 8, id);
	put32(p + 12, n);
	for (i = ESP_PL_HDR; i < n; i++)
		p[i] = pat(sess ^ id, i);
}

/* 0 when @p is a whole payload of ours; its id in *id. */
static int esp_payload_ok(const uint8_t *p, size_t n, uint32_t sess, uint32_t *id)
{
	size_t i;

	if (n < ESP_PL_HDR || get32(p) != ESP_MAGIC || get32(p + 4) != sess ||
	    get32(p + 12) != n)
		return -1;
	*id = get32(p + 8);
	for (i = ESP_PL_HDR; i < n; i++)
		if (p[i] != pat(sess ^ *id, i))
			return -1;
	return 0;
}

/* Frame (Length included) into @buf; returns its length. @pl >= 16. */
static size_t esp_seal(uint8_t *buf, int family, uint32_t spi, uint32_t seq,
		       uint32_t sess, uint32_t id, size_t pl)
{
	uint8_t *e = buf + 2, *udp = e + 8;
	size_t n = 8 + pl, pad, i;

	put32(e, spi);
	put32(e + 4, seq);
	put16(udp, 1000);
	put16(udp + 2, UDP_SINK);
	put16(udp + 4, n);
	esp_payload(udp + 8, pl, sess, id);
	udp_csum(family, udp, n);
	pad = (4 - (n + 2) % 4) % 4;
	for (i = 0; i < pad; i++)
		udp[n + i] = i + 1;
	udp[n + pad] = pad;
	udp[n + pad + 1] = IPPROTO_UDP;
	n = 2 + 8 + n + pad + 2;
	put16(buf, n);
	return n;
}

/*
 * The model's view of an ESP body (no Length) for SA @spi: would the kernel
 * deliver a datagram to UDP_SINK, and which? Mirrors RFC 4303 processing
 * with a null cipher and no ICV (so no alignment either): pad length, next
 * header, UDP length (the kernel trims extra bytes). The payload is
 * whatever the frame holds, mutated or not: nothing checks it.
 */
static int esp_model(const uint8_t *b, size_t len, uint32_t spi,
		     const uint8_t **pl, size_t *pl_len)
{
	size_t elen, padlen, ulen;
	const uint8_t *udp;

	if (len < 8 || get32(b) != spi)
		return -1;
	elen = len - 8;
	if (!elen)
		return -1;
	padlen = b[len - 2];
	if (padlen + 2 > elen || b[len - 1] != IPPROTO_UDP)
		return -1;
	udp = b + 8;
	if (elen - padlen - 2 < 8)
		return -1;
	ulen = get16(udp + 4);
	if (ulen < 8 || ulen > elen - padlen - 2 || get16(udp + 2) != UDP_SINK)
		return -1;
	*pl = udp + 8;
	*pl_len = ulen - 8;
	return 0;
}

/*
 * Datagrams the stream's ESP may or must produce, by a hash of their bytes,
 * over the whole run: one that arrives late, after its session, is still
 * known.
 */
#define ESPH_SIZE	0x100000

struct esph {
	unsigned long long h;
	uint32_t sess;
	uint16_t must, may, got;
};

static struct esph *esph;

static unsigned long long fnv(const uint8_t *p, size_t n)
{
	unsigned long long h = 0xcbf29ce484222325ULL;

	while (n--)
		h = (h ^ *p++) * 0x100000001b3ULL;
	return h | 1;	/* 0 marks a free entry */
}

static struct esph *esph_get(unsigned long long h, bool add);

/* Forget the sessions before @keep (their datagrams are long delivered). */
static void esph_prune(uint32_t keep)
{
	struct esph *old = esph;
	uint32_t i;

	esph = calloc(ESPH_SIZE, sizeof(*esph));
	CHECK(esph, "out of memory");
	for (i = 0; i < ESPH_SIZE; i++)
		if (old[i].h && old[i].sess >= keep)
			*esph_get(old[i].h, true) = old[i];
	free(old);
}

static struct esph *esph_get(unsigned long long h, bool add)
{
	uint32_t i = h % ESPH_SIZE, n;

	for (n = 0; n < ESPH_SIZE; n++, i = (i + 1) % ESPH_SIZE) {
		if (esph[i].h == h)
			return &esph[i];
		if (!esph[i].h) {
			if (!add)
				return NULL;
			esph[i].h = h;
			return &esph[i];
		}
	}
	fail("ESP hash table full");
	return NULL;
}

/* ------------------------------------------------------------------ */
/*
 * stream: the model of the receive side. It parses exactly the bytes the
 * peer wrote, as RFC 9329 and the documentation say the ULP must:
 *
 * - Length 0 or 1 breaks the stream: nothing after it is ever delivered,
 *   recv() reports an error once the messages before it are read;
 * - a keepalive (Length 3, 0xff) and anything too short for a marker or an
 *   SPI is dropped;
 * - an IKE message is delivered whole, in order, exactly once. It *must* be
 *   delivered when the unread messages before it fit SO_RCVBUF by a
 *   conservative estimate of their memory; otherwise it *may* be dropped.
 *   A marker-only message (Length 6) may be delivered or dropped;
 * - a Length beyond SO_RCVBUF may end the stream (strparser's limit): from
 *   there on nothing is required, but nothing invented may appear;
 * - an ESP packet of ours for the live SA must come out of XFRM as its UDP
 *   datagram, once per copy on the stream.
 */

#define QMAX		65536
#define ESP_IDS		8192

struct pmsg {
	uint8_t *data;
	uint32_t len;
	bool must;
};

struct model {
	uint8_t hdr[2];
	int hdr_have;
	bool in_frame;
	uint8_t *body;
	uint32_t flen, fhave;
	bool broken;		/* Length 0/1 seen */
	bool uncertain;		/* the kernel may have stopped parsing */
	uint32_t rcvbuf;
	struct pmsg q[QMAX];
	unsigned int qh, qt;
	size_t qmem;
	uint32_t spi, sess;
	unsigned long long frames;
};

static uint8_t len_seen[65536 / 8];

/* Memory an IKE message of @len bytes takes in the receive queue, or more. */
static size_t est_truesize(uint32_t len)
{
	size_t sz = 64;

	while (sz < len + 64 + 320)
		sz <<= 1;
	return sz + 512;
}

static unsigned int q_len(const struct model *m)
{
	return m->qt - m->qh;
}

static void model_frame(struct model *m)
{
	const uint8_t *b = m->body;
	uint32_t len = m->flen;
	const uint8_t *pl;
	size_t pl_len;

	m->frames++;
	if (len == 1 && b[0] == 0xff)
		return;		/* keepalive */
	if (len < 4)
		return;		/* too short */
	if (!get32(b)) {
		struct pmsg *p;

		if (q_len(m) >= QMAX)
			fail("model: more than %d unread IKE messages", QMAX);
		p = &m->q[m->qt++ % QMAX];
		p->data = malloc(len);
		CHECK(p->data, "out of memory");
		memcpy(p->data, b, len);
		p->len = len;
		m->qmem += est_truesize(len);
		p->must = !m->uncertain && len > 4 && m->qmem <= m->rcvbuf;
		trace("model: IKE #%u of %u bytes, %s (queue %zu of %u)",
		      m->qt - 1, len, p->must ? "must" : "may", m->qmem,
		      m->rcvbuf);
		return;
	}
	if (!esp_model(b, len, m->spi, &pl, &pl_len)) {
		struct esph *e = esph_get(fnv(pl, pl_len), true);

		if (e->sess != m->sess) {
			/* The same bytes in an earlier session: start over. */
			e->sess = m->sess;
			e->must = 0;
			e->may = 0;
			e->got = 0;
		}
		if (m->uncertain)
			e->may++;
		else
			e->must++;
	}
}

/* The peer wrote @n more bytes of the stream. */
static void model_feed(struct model *m, const uint8_t *p, size_t n)
{
	while (n && !m->broken) {
		if (!m->in_frame) {
			uint16_t l;

			m->hdr[m->hdr_have++] = *p++;
			n--;
			if (m->hdr_have < 2)
				continue;
			m->hdr_have = 0;
			l = get16(m->hdr);
			len_seen[l / 8] |= 1 << (l % 8);
			if (l < 2) {
				m->broken = true;
				break;
			}
			if (l > m->rcvbuf)
				m->uncertain = true;
			m->flen = l - 2;
			m->fhave = 0;
			m->in_frame = true;
		} else {
			uint32_t k = m->flen - m->fhave;

			if (k > n)
				k = n;
			memcpy(m->body + m->fhave, p, k);
			m->fhave += k;
			p += k;
			n -= k;
		}
		if (m->in_frame && m->fhave == m->flen) {
			m->in_frame = false;
			model_frame(m);
		}
	}
}

static bool model_must_pending(const struct model *m)
{
	unsigned int i;

	for (i = m->qh; i != m->qt; i++)
		if (m->q[i % QMAX].must)
			return true;
	return false;
}

static void q_pop(struct model *m)
{
	struct pmsg *p = &m->q[m->qh++ % QMAX];

	m->qmem -= est_truesize(p->len);
	free(p->data);
	p->data = NULL;
}

/* Nothing is required any more: the connection was reset or closed. */
static void model_relax(struct model *m)
{
	unsigned int i;

	for (i = m->qh; i != m->qt; i++)
		m->q[i % QMAX].must = false;
	for (i = 0; i < ESPH_SIZE; i++) {
		if (esph[i].h && esph[i].sess == m->sess) {
			esph[i].may += esph[i].must;
			esph[i].must = 0;
		}
	}
	m->uncertain = true;
}

/*
 * recv() gave @ret for a buffer of @buflen (@flags of the call, @mflags the
 * returned msg_flags or -1 when the call cannot tell): match it against the
 * unread messages. Returns false when @ret must be end of stream instead.
 */
static bool pmsg_matches(const struct pmsg *p, const uint8_t *buf,
			 size_t buflen, ssize_t ret, int flags, int mflags)
{
	size_t copied = buflen < p->len ? buflen : p->len;
	ssize_t want = (flags & MSG_TRUNC) ? (ssize_t)p->len : (ssize_t)copied;
	bool copied_all = copied == p->len;

	return ret == want && !memcmp(buf, p->data, copied) &&
	       (mflags < 0 || !(mflags & MSG_TRUNC) == copied_all);
}

static bool model_match(struct model *m, const uint8_t *buf, size_t buflen,
			ssize_t ret, int flags, int mflags)
{
	unsigned int i, k, last;

	for (i = m->qh; i != m->qt; i++) {
		struct pmsg *p = &m->q[i % QMAX];

		if (pmsg_matches(p, buf, buflen, ret, flags, mflags)) {
			/* A short read may match a later message as well (the
			 * same first bytes), which the kernel may have
			 * returned instead, having dropped this "may" one:
			 * those in between are no longer certain to come.
			 */
			last = i;
			for (k = i + 1; !p->must && k != m->qt; k++) {
				struct pmsg *o = &m->q[k % QMAX];

				if (pmsg_matches(o, buf, buflen, ret, flags,
						 mflags))
					last = k;
				if (o->must)
					break;
			}
			for (k = i + 1; k != last + 1; k++)
				m->q[k % QMAX].must = false;
			/* The kernel dropped the ones before: only "may" ones. */
			while (m->qh != i) {
				CHECK(!m->q[m->qh % QMAX].must,
				      "IKE message of %u bytes (unread #%u) was lost: got one of %u bytes",
				      m->q[m->qh % QMAX].len, m->qh, p->len);
				q_pop(m);
			}
			if (!(flags & MSG_PEEK))
				q_pop(m);
			return true;
		}
		if (p->must)
			break;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* stream: one session. */

struct session {
	struct rng r;
	uint32_t idx;
	struct conn c;
	struct model *m;
	struct sa live, dead;
	uint32_t unknown_spi, mismatch_spi;
	uint8_t *gen;
	size_t gen_len, gen_off;
	uint32_t esp_seq, esp_id, frames_left;
	bool peer_shut, peer_rst, user_closed, errored, eof_seen, peer_dead;
	int udp[2];
	unsigned long long drops0;
	int nl;
};

#define GEN_MAX		(4 << 20)

static uint32_t sweep_len = 2;
static uint8_t *replay_buf;	/* --replay: these bytes instead of generated ones */
static size_t replay_len;

static uint8_t *gen_room(struct session *s, size_t n)
{
	uint8_t *p;

	if (s->gen_len + n > GEN_MAX) {
		memmove(s->gen, s->gen + s->gen_off, s->gen_len - s->gen_off);
		s->gen_len -= s->gen_off;
		s->gen_off = 0;
	}
	CHECK(s->gen_len + n <= GEN_MAX, "generator overflow");
	p = s->gen + s->gen_len;
	s->gen_len += n;
	return p;
}

/* An ESP body of @len bytes (after Length) for @spi that no SA opens. */
static void gen_esp_junk(struct session *s, uint8_t *p, size_t len, uint32_t spi)
{
	rfill(&s->r, p, len);
	if (len >= 4)
		put32(p, spi);
	else
		p[0] |= 1;	/* never a marker */
}

static uint32_t pick_spi(struct session *s)
{
	switch (rnd(&s->r, 4)) {
	case 0:
		return s->dead.spi;
	case 1:
		return s->mismatch_spi;
	case 2:
		return s->live.spi;	/* garbage for the live SA */
	default:
		return s->unknown_spi ^ rnd(&s->r, 16);
	}
}

static void gen_ike(struct session *s, uint32_t body)
{
	uint8_t *p = gen_room(s, 2 + 4 + body);

	put16(p, 2 + 4 + body);
	put32(p + 2, 0);
	if (body >= 8) {
		put32(p + 6, IKE_MAGIC);
		rfill(&s->r, p + 10, body - 4);
	} else {
		rfill(&s->r, p + 6, body);
	}
}

/* One frame, valid or not, appended to the session's pending bytes. */
static void gen_frame(struct session *s, bool esp_ok)
{
	struct rng *r = &s->r;
	uint8_t *p, *start;
	uint32_t k = rnd(r, 1000), len;
	size_t before = s->gen_len - s->gen_off;

	if (k < 300) {
		gen_ike(s, rnd(r, 64));
	} else if (k < 400) {
		gen_ike(s, rrange(r, 64, 2000));
	} else if (k < 412) {
		gen_ike(s, rrange(r, 2000, MAX_MSG - 6));
	} else if (k < 490) {
		/* Every Length over a run, in order. */
		len = sweep_len;
		sweep_len = sweep_len >= MAX_MSG ? 2 : sweep_len + 1;
		if (len >= 6 && rnd(r, 10) < 6) {
			gen_ike(s, len - 6);
		} else {
			p = gen_room(s, len);
			put16(p, len);
			gen_esp_junk(s, p + 2, len - 2, pick_spi(s));
			if (len == 3 && chance(r, 500))
				p[2] = 0xff;
		}
	} else if (k < 540) {
		p = gen_room(s, 3);
		memcpy(p, "\0\3\xff", 3);
	} else if (k < 570) {
		len = rrange(r, 2, 5);
		p = gen_room(s, len);
		put16(p, len);
		rfill(r, p + 2, len - 2);
	} else if (k < 590) {
		gen_ike(s, 0);		/* marker only */
	} else if (k < 800 && esp_ok && s->esp_id < ESP_IDS) {
		size_t pl = chance(r, 20) ? rrange(r, 2000, 60000) :
					    rrange(r, ESP_PL_HDR, 1400);

		p = gen_room(s, 2 + 8 + 8 + pl + 3 + 2);
		len = esp_seal(p, s->c.family, s->live.spi, ++s->esp_seq,
			       s->idx, s->esp_id++, pl);
		s->gen_len -= 2 + 8 + 8 + pl + 3 + 2 - len;
		if (chance(r, 100)) {
			/* Truncated: a shorter Length over the same bytes. */
			uint32_t cut = rrange(r, 6, len);

			put16(p, cut);
			s->gen_len -= len - cut;
		}
	} else if (k < 900) {
		len = chance(r, 50) ? rrange(r, 6, MAX_MSG) : rrange(r, 6, 200);
		p = gen_room(s, len);
		put16(p, len);
		gen_esp_junk(s, p + 2, len - 2, pick_spi(s));
	} else if (k < 903) {
		/* Fatal. */
		p = gen_room(s, 2);
		put16(p, rnd(r, 2));
	} else if (k < 915) {
		/* Garbage: the framing goes wherever it leads. */
		len = rrange(r, 1, 40);
		p = gen_room(s, len);
		rfill(r, p, len);
	} else {
		gen_ike(s, rrange(r, 0, 300));
	}

	/* Mutations of what was just made. */
	start = s->gen + s->gen_off + before;
	len = s->gen_len - s->gen_off - before;
	if (len && chance(r, 20)) {
		switch (rnd(r, 3)) {
		case 0:
			start[rnd(r, len)] ^= 1 << rnd(r, 8);
			break;
		case 1:
			s->gen_len -= rnd(r, len);	/* cut short */
			break;
		default:
			if (len <= 65536) {	/* twice */
				uint8_t *dst = gen_room(s, len);

				memcpy(dst, dst - len, len);
			}
		}
	}
	sh->frames++;
}

static void stream_save(const uint8_t *p, size_t n)
{
	size_t k = n;

	if (sh->stream_len + k > STREAM_MAX)
		k = STREAM_MAX - sh->stream_len;
	memcpy(sh->stream + sh->stream_len, p, k);
	sh->stream_len += k;
}

/* Write up to @n pending bytes from the peer; false when it cannot. */
static bool peer_write(struct session *s, size_t n)
{
	size_t avail = s->gen_len - s->gen_off;
	ssize_t w;

	if (n > avail)
		n = avail;
	if (!n || s->peer_dead)
		return false;
	w = send(s->c.raw, s->gen + s->gen_off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0) {
		if (errno == EAGAIN)
			return false;
		/* Only a stream the ULP gave up on may refuse bytes. */
		CHECK(s->m->broken || s->m->uncertain || s->user_closed,
		      "peer write: %s on a healthy stream", strerror(errno));
		s->peer_dead = true;
		return false;
	}
	trace("peer wrote %zd of %zu at %zu", w, n, s->gen_off);
	stream_save(s->gen + s->gen_off, w);
	model_feed(s->m, s->gen + s->gen_off, w);
	s->gen_off += w;
	return true;
}

static void esp_collect(struct session *s)
{
	static uint8_t buf[65536];
	int i;

	for (i = 0; i < 2; i++) {
		for (;;) {
			ssize_t n = recv(s->udp[i], buf, sizeof(buf), MSG_DONTWAIT);

			if (n < 0)
				break;
			struct esph *e = esph_get(fnv(buf, n), false);

			CHECK(e, "a datagram of %zd bytes out of XFRM: no ESP frame carried it",
			      n);
			e->got++;
			sh->esp_delivered++;
			CHECK(e->got <= e->must + e->may,
			      "an ESP datagram of %zd bytes delivered %u times, on the stream %u+%u times",
			      n, e->got, e->must, e->may);
		}
	}
}

/* May the stream have ended (EOF) or failed (error) by now? */
static bool end_allowed(struct session *s)
{
	return s->peer_shut || s->peer_rst || s->m->broken || s->m->uncertain;
}

/* Check a result of a receive call on the ULP socket. */
static void check_recv(struct session *s, const uint8_t *buf, size_t buflen,
		       ssize_t ret, int err, int flags, int mflags, bool bad_flags)
{
	struct model *m = s->m;

	if (bad_flags) {
		CHECK(ret < 0 && err == EOPNOTSUPP,
		      "recv with flags %#x: %zd (%s), want EOPNOTSUPP", flags,
		      ret, strerror(err));
		return;
	}
	if (ret < 0) {
		switch (err) {
		case EAGAIN:
			return;
		case EPROTO:
		case EMSGSIZE:
		case ECONNRESET:
		case EPIPE:
		case ETIMEDOUT:
			CHECK(end_allowed(s), "recv: %s on a healthy stream",
			      strerror(err));
			CHECK(!model_must_pending(m),
			      "recv: %s before a message that must be delivered",
			      strerror(err));
			if (err == EPROTO || err == EMSGSIZE)
				CHECK(m->broken || m->uncertain,
				      "recv: %s without a framing error",
				      strerror(err));
			s->errored = true;
			return;
		default:
			fail("recv: unexpected %s", strerror(err));
		}
	}
	if (model_match(m, buf, buflen, ret, flags, mflags)) {
		sh->ike_delivered++;
		CHECK(!s->eof_seen, "a message after end of stream");
		return;
	}
	/* Not a message: it can only be the end of the stream. */
	CHECK(ret == 0 && (mflags < 0 || !(mflags & MSG_TRUNC)),
	      "recv returned %zd bytes (buffer %zu, flags %#x) that match no unread message",
	      ret, buflen, flags);
	CHECK(end_allowed(s), "recv: end of stream on a healthy stream");
	CHECK(!model_must_pending(m),
	      "recv: end of stream before a message that must come");
	s->eof_seen = true;
}

/* One receive call of a random kind, flags and buffer size. */
static void user_recv(struct session *s, bool may_block)
{
	static uint8_t buf[70000];
	static const int good[] = { MSG_PEEK, MSG_TRUNC, MSG_WAITALL, MSG_DONTWAIT };
	static const int bad[] = { MSG_OOB, MSG_ERRQUEUE };
	struct rng *r = &s->r;
	int flags = 0, mflags = -1, kind = rnd(r, 6), err;
	bool bad_flags = false;
	size_t buflen;
	ssize_t ret;
	unsigned int i;

	switch (rnd(r, 6)) {
	case 0:
		buflen = rnd(r, 9);
		break;
	case 1:
		buflen = rrange(r, 9, 300);
		break;
	case 2:
		buflen = q_len(s->m) ? s->m->q[s->m->qh % QMAX].len : 64;
		break;
	default:
		buflen = sizeof(buf);
	}
	for (i = 0; i < ARRAY_SIZE(good); i++)
		if (chance(r, 250))
			flags |= good[i];
	if (chance(r, 20)) {
		flags |= bad[rnd(r, ARRAY_SIZE(bad))];
		bad_flags = true;
	}
	if (!may_block)
		flags |= MSG_DONTWAIT;
	/* A zero-length read is only told from EOF by msg_flags. */
	if (buflen == 0 || (kind >= 3 && flags))
		kind = 2;

	memset(buf, 0xa5, buflen < 64 ? buflen : 64);
	switch (kind) {
	case 0:
		ret = recv(s->c.ulp, buf, buflen, flags);
		break;
	case 1:
		ret = recvfrom(s->c.ulp, buf, buflen, flags, NULL, NULL);
		break;
	case 2: {
		struct iovec iov[3];
		struct msghdr msg = { .msg_iov = iov };
		size_t a = buflen ? rnd(r, buflen) : 0, b = buflen - a;

		iov[0] = (struct iovec){ buf, a };
		iov[1] = (struct iovec){ NULL, 0 };
		iov[2] = (struct iovec){ buf + a, b };
		msg.msg_iovlen = 3;
		ret = recvmsg(s->c.ulp, &msg, flags);
		mflags = msg.msg_flags;
		break;
	}
	case 3:
		ret = read(s->c.ulp, buf, buflen);
		break;
	case 4: {
		struct mmsghdr mm[2];
		struct iovec iov[2] = { { buf, buflen / 2 },
					{ buf + buflen / 2, buflen - buflen / 2 } };
		int n;

		memset(mm, 0, sizeof(mm));
		mm[0].msg_hdr.msg_iov = &iov[0];
		mm[0].msg_hdr.msg_iovlen = 1;
		mm[1].msg_hdr.msg_iov = &iov[1];
		mm[1].msg_hdr.msg_iovlen = 1;
		n = recvmmsg(s->c.ulp, mm, 2, MSG_DONTWAIT, NULL);
		err = errno;
		trace("recvmmsg(%zu) = %d", buflen, n);
		/* recvmmsg() reports the socket's pending error (sk_err, set
		 * when the connection was reset) before looking at the queue,
		 * as on any socket: what is queued comes with the next call.
		 */
		if (n < 0 && err != EAGAIN && model_must_pending(s->m)) {
			CHECK(end_allowed(s), "recvmmsg: %s on a healthy stream",
			      strerror(err));
			return;
		}
		if (n <= 0) {
			check_recv(s, buf, buflen / 2, n, err, MSG_DONTWAIT,
				   -1, false);
			return;
		}
		check_recv(s, buf, buflen / 2, mm[0].msg_len, 0, 0,
			   mm[0].msg_hdr.msg_flags, false);
		if (n > 1)
			check_recv(s, buf + buflen / 2, buflen - buflen / 2,
				   mm[1].msg_len, 0, 0,
				   mm[1].msg_hdr.msg_flags, false);
		return;
	}
	default: {
		struct iovec iov[2] = { { buf, buflen / 3 },
					{ buf + buflen / 3, buflen - buflen / 3 } };

		ret = readv(s->c.ulp, iov, 2);
		break;
	}
	}
	err = errno;
	trace("recv kind %d buf %zu flags %#x = %zd%s%s", kind, buflen, flags,
	      ret, ret < 0 ? " " : "", ret < 0 ? strerror(err) : "");
	check_recv(s, buf, buflen, ret, err, flags, mflags, bad_flags);
}

/* poll/select/epoll: readable only with something to read. */
static void user_poll(struct session *s)
{
	struct rng *r = &s->r;
	bool readable, nothing;
	int how = rnd(r, 3);

	/* Before asking: the model's queue is a superset of the kernel's. */
	nothing = !q_len(s->m) && !end_allowed(s);
	if (how == 0) {
		struct pollfd pfd = { .fd = s->c.ulp, .events = POLLIN };

		CHECK(poll(&pfd, 1, 0) >= 0, "poll: %s", strerror(errno));
		readable = pfd.revents & (POLLIN | POLLERR);
		CHECK(!(pfd.revents & POLLNVAL), "poll: POLLNVAL");
	} else if (how == 1) {
		struct timeval tv = { 0 };
		fd_set rfds;

		FD_ZERO(&rfds);
		FD_SET(s->c.ulp, &rfds);
		CHECK(select(s->c.ulp + 1, &rfds, NULL, NULL, &tv) >= 0,
		      "select: %s", strerror(errno));
		readable = FD_ISSET(s->c.ulp, &rfds);
	} else {
		struct epoll_event ev = { .events = EPOLLIN }, out;
		int ep = epoll_create1(EPOLL_CLOEXEC);

		CHECK(ep >= 0 && !epoll_ctl(ep, EPOLL_CTL_ADD, s->c.ulp, &ev),
		      "epoll: %s", strerror(errno));
		readable = epoll_wait(ep, &out, 1, 0) == 1 &&
			   (out.events & (EPOLLIN | EPOLLERR));
		close(ep);
	}
	trace("poll how %d readable %d", how, readable);
	CHECK(!(readable && nothing),
	      "readable (poll kind %d) with no message, EOF or error possible",
	      how);
	if (readable) {
		/* Readable means a receive does not find nothing. */
		static uint8_t buf[MAX_MSG];
		ssize_t ret = recv(s->c.ulp, buf, sizeof(buf), MSG_DONTWAIT);
		int err = errno;

		trace("recv after readable = %zd", ret);
		CHECK(!(ret < 0 && err == EAGAIN), "readable, but recv says EAGAIN");
		check_recv(s, buf, sizeof(buf), ret, err, MSG_DONTWAIT, -1,
			   false);
	}
}

/*
 * Every message that must be delivered is received within WAIT_MS, and so
 * is the end of the stream when it must come.
 */
static void user_drain(struct session *s, bool want_end)
{
	unsigned long long end = now_ns() + WAIT_MS * 1000000ULL;
	/* A message the peer never finished before its FIN is discarded. */
	bool partial = s->peer_shut && (s->m->in_frame || s->m->hdr_have) &&
		       !s->m->broken && !s->m->uncertain;
	static uint8_t buf[MAX_MSG];

	trace("drain want_end %d", want_end);
	while (model_must_pending(s->m) ||
	       (want_end && !s->eof_seen && !s->errored)) {
		struct pollfd pfd = { .fd = s->c.ulp, .events = POLLIN };
		int left = (end - now_ns()) / 1000000;
		ssize_t ret;

		if (now_ns() >= end) {
			CHECK(!model_must_pending(s->m),
			      "IKE message %u (%u bytes) not delivered within %d ms",
			      s->m->qh, s->m->q[s->m->qh % QMAX].len, WAIT_MS);
			fail("no end of stream within %d ms (%s)", WAIT_MS,
			     s->m->broken ? "after a fatal Length" :
			     s->peer_rst ? "after a reset" :
			     partial ? "after FIN in the middle of a message" :
			     "after FIN");
		}
		poll(&pfd, 1, left > 100 ? 100 : left > 0 ? left : 1);
		ret = recv(s->c.ulp, buf, sizeof(buf), MSG_DONTWAIT);
		check_recv(s, buf, sizeof(buf), ret, errno, MSG_DONTWAIT, -1,
			   false);
	}
}

/* After the stream failed or ended: no call blocks or finds nothing. */
static void user_after_end(struct session *s)
{
	static uint8_t buf[256];
	int i;

	for (i = 0; i < 3; i++) {
		ssize_t ret = recv(s->c.ulp, buf, sizeof(buf), MSG_DONTWAIT);
		int err = errno;

		trace("recv after end = %zd %s", ret, ret < 0 ? strerror(err) : "");
		CHECK(ret == 0 || (ret < 0 && err != EAGAIN),
		      "recv after %s: %s", s->errored ? "the stream failed" :
		      "end of stream", ret > 0 ? "a message" : "EAGAIN");
	}
}

static int session_sas(struct session *s)
{
	struct sa *l = &s->live, *d = &s->dead;
	int err;

	memset(l, 0, sizeof(*l));
	l->family = s->c.family;
	addr_of(l->family, &l->src);
	addr_of(l->family, &l->dst);
	l->spi = 0x10000000 | (s->idx & 0xfffff) << 4 | 1;
	l->reqid = 0;
	l->encap = TCP_ENCAP_ESPINTCP;
	l->sport = s->c.raw_port;
	l->dport = s->c.ulp_port;
	l->alg = ALG_NULL;
	*d = *l;
	d->spi = l->spi + 2;
	err = sa_put(s->nl, l, XFRM_MSG_NEWSA);
	CHECK(!err, "add live SA: %s", strerror(-err));
	err = sa_put(s->nl, d, XFRM_MSG_NEWSA);
	CHECK(!err, "add SA: %s", strerror(-err));
	err = sa_del(s->nl, d);
	CHECK(!err, "delete SA: %s", strerror(-err));
	s->m->spi = l->spi;
	return 0;
}

/* Where the time goes (ESPINTCP_FUZZ_DUMP): the step running since last call. */
static double prof_s[8];
static unsigned long long prof_t;
static int prof_cur = -1;

static void prof(int step)
{
	unsigned long long t = now_ns();

	if (prof_cur >= 0)
		prof_s[prof_cur] += (t - prof_t) / 1e9;
	prof_cur = step;
	prof_t = t;
}

static void stream_session(uint32_t idx, int nl, int udp[2], uint32_t mismatch_spi)
{
	struct session s = { .idx = idx, .nl = nl };
	static uint8_t early[4096];
	size_t early_len = 0;
	int rcvbuf = 0, ending, tries;
	socklen_t sl = sizeof(rcvbuf);
	unsigned long long missing, tolerance;
	unsigned int i;

	prof(7);
	if (idx && !(idx % 128))
		esph_prune(idx - 1);
	s.r.s = mix(sh->seed, idx);
	sh->unit = idx;
	sh->unit_seed = s.r.s;
	sh->stream_len = 0;
	sh->trace_len = 0;
	s.udp[0] = udp[0];
	s.udp[1] = udp[1];
	s.mismatch_spi = mismatch_spi;
	s.unknown_spi = 0x20000000 | rnd(&s.r, 0xffff) << 8;
	s.m = calloc(1, sizeof(*s.m));
	s.gen = malloc(GEN_MAX);
	CHECK(s.m && s.gen, "out of memory");
	s.m->body = malloc(MAX_MSG);
	CHECK(s.m->body, "out of memory");
	s.m->sess = idx;
	s.frames_left = chance(&s.r, 100) ? rrange(&s.r, 1000, 5000) :
					    rrange(&s.r, 1, 600);
	if (chance(&s.r, 150))
		rcvbuf = chance(&s.r, 500) ? rrange(&s.r, 1024, 16384) :
					     rrange(&s.r, 16384, 262144);

	/* Bytes that arrive before the ULP is attached. */
	if (replay_buf) {
		CHECK(replay_len <= GEN_MAX, "replay file too long");
		memcpy(s.gen, replay_buf, replay_len);
		s.gen_len = replay_len;
		s.frames_left = 0;
	} else if (chance(&s.r, 100)) {
		early_len = rrange(&s.r, 1, 40);
		rfill(&s.r, early, early_len);	/* garbage after IKETCP */
	} else if (chance(&s.r, 100)) {
		while (s.gen_len < 2048)
			gen_ike(&s, rnd(&s.r, 100));
		early_len = s.gen_len;
		memcpy(early, s.gen, early_len);
		s.gen_len = 0;
	}
	s.c.family = chance(&s.r, 500) ? AF_INET6 : AF_INET;
	trace("session %u seed %#llx family %d rcvbuf %d early %zu frames %u",
	      idx, s.r.s, s.c.family, rcvbuf, early_len, s.frames_left);
	CHECK(!conn_open(&s.c, s.c.family, early, early_len, rcvbuf),
	      "connection: %s", strerror(errno));
	CHECK(!getsockopt(s.c.ulp, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &sl),
	      "SO_RCVBUF: %s", strerror(errno));
	s.m->rcvbuf = rcvbuf;
	stream_save(early, early_len);
	model_feed(s.m, early, early_len);
	session_sas(&s);
	s.drops0 = xfrm_resource_drops() + udp_drops();

	/* Frames, splits and calls, interleaved. */
	tries = 0;
	prof(-1);
	while (!out_of_time() && !s.user_closed && !s.peer_dead) {
		uint32_t k = rnd(&s.r, 1000);
		size_t pending = s.gen_len - s.gen_off;

		prof(k < 400 ? 0 : k < 650 ? 1 : k < 850 ? 2 : k < 950 ? 3 : 4);

		if (!pending && !s.frames_left)
			break;
		if (pending < 65536 && s.frames_left && k < 400) {
			gen_frame(&s, true);
			s.frames_left--;
		} else if (k < 650 && pending) {
			size_t n = chance(&s.r, 300) ? pending :
				   rrange(&s.r, 1, pending < 3000 ? pending : 3000);

			if (!peer_write(&s, n)) {
				/* TCP is full: the ULP must read on. */
				struct pollfd pfd = { .fd = s.c.raw, .events = POLLOUT };

				if (s.peer_dead)
					break;
				if (q_len(s.m) > 256)
					user_drain(&s, false);
				if (poll(&pfd, 1, 100) == 0 && ++tries > WAIT_MS / 100)
					fail("stream stalled: the peer cannot write for %d ms",
					     WAIT_MS);
			} else {
				tries = 0;
			}
		} else if (k < 850) {
			user_recv(&s, model_must_pending(s.m) && !s.errored &&
				  chance(&s.r, 200));
		} else if (k < 950) {
			user_poll(&s);
		} else if (k < 960) {
			user_drain(&s, false);
		} else if (k < 962) {
			trace("user close");
			close(s.c.ulp);
			s.user_closed = true;
			model_relax(s.m);
		}
		if (q_len(s.m) > 4096)
			user_drain(&s, false);
		esp_collect(&s);
	}

	/* How the session ends. */
	prof(5);
	ending = rnd(&s.r, 4);
	trace("end %d", ending);
	if (!s.user_closed && !out_of_time()) {
		if (ending == 0 && !s.peer_dead) {
			/* Mostly whole frames before the FIN. */
			unsigned long long e = now_ns() + WAIT_MS * 1000000ULL;

			while (chance(&s.r, 900) && s.gen_off < s.gen_len &&
			       !s.peer_dead && now_ns() < e) {
				struct pollfd pfd = { .fd = s.c.raw, .events = POLLOUT };

				if (!peer_write(&s, s.gen_len - s.gen_off))
					poll(&pfd, 1, 100);
			}
			CHECK(!shutdown(s.c.raw, SHUT_WR) || s.m->broken ||
			      s.m->uncertain, "peer shutdown: %s", strerror(errno));
			s.peer_shut = true;
			user_drain(&s, true);
			if (!s.m->in_frame && !s.m->hdr_have)
				user_after_end(&s);
		} else if (ending == 1) {
			close_rst(s.c.raw);
			s.c.raw = -1;
			s.peer_rst = true;
			model_relax(s.m);
			user_drain(&s, true);
			user_after_end(&s);
		} else {
			user_drain(&s, s.m->broken);
			if (s.m->broken)
				user_after_end(&s);
		}
	}

	if (getenv("ESPINTCP_FUZZ_DUMP") && prof_cur == 5 &&
	    now_ns() - prof_t > 500000000ULL)
		fprintf(stderr, "session %u: ending %d took %.2f s (%d %d %d %d %d)\n",
			idx, ending, (now_ns() - prof_t) / 1e9, s.m->broken,
			s.m->uncertain, s.errored, s.eof_seen, s.m->in_frame);
	/* ESP that must have come out of XFRM did, or was counted as dropped. */
	prof(6);
	if (!s.user_closed && !s.peer_rst) {
		unsigned long long end = now_ns() + WAIT_MS * 1000000ULL;

		for (;;) {
			missing = 0;
			esp_collect(&s);
			for (i = 0; i < ESPH_SIZE; i++)
				if (esph[i].h && esph[i].sess == idx &&
				    esph[i].got < esph[i].must)
					missing += esph[i].must - esph[i].got;
			if (!missing || now_ns() >= end)
				break;
			usleep(10000);
		}
		tolerance = xfrm_resource_drops() + udp_drops() - s.drops0;
		CHECK(missing <= tolerance,
		      "%llu ESP packets not delivered (%llu counted as dropped)",
		      missing, tolerance);
	}
	for (i = 0; i < ESPH_SIZE; i++)
		if (esph[i].h && esph[i].sess == idx)
			sh->esp_sent += esph[i].must;
	sh->lengths_seen = 0;
	for (i = 0; i < sizeof(len_seen); i++)
		sh->lengths_seen += __builtin_popcount(len_seen[i]);

	prof(7);
	sa_del(nl, &s.live);
	if (!s.user_closed)
		close(s.c.ulp);
	if (s.c.raw >= 0)
		close(s.c.raw);
	esp_collect(&s);
	while (q_len(s.m))
		q_pop(s.m);
	free(s.m->body);
	free(s.m);
	free(s.gen);
}

static void mode_stream(unsigned long long frames, int64_t session)
{
	struct sa mm = { 0 };
	int nl, udp[2], err;
	uint32_t idx;
	unsigned int i, n = 0;

	esph = calloc(ESPH_SIZE, sizeof(*esph));
	CHECK(esph, "out of memory");
	new_netns();
	nl = nl_open();		/* loads xfrm_user, which per-socket policies need */
	listeners();
	udp[0] = udp_sink(AF_INET, UDP_SINK);
	udp[1] = udp_sink(AF_INET6, UDP_SINK);

	/* An SA whose encapsulation is not TCP: XFRM refuses it for ESP from the stream. */
	mm.family = AF_INET;
	addr_of(AF_INET, &mm.src);
	addr_of(AF_INET, &mm.dst);
	mm.spi = 0x30000001;
	mm.encap = 2;	/* UDP_ENCAP_ESPINUDP */
	mm.sport = 4500;
	mm.dport = 4500;
	err = sa_put(nl, &mm, XFRM_MSG_NEWSA);
	CHECK(!err, "add UDP-encap SA: %s", strerror(-err));

	for (idx = session >= 0 ? session : 0;
	     sh->frames < frames && !out_of_time(); idx++) {
		stream_session(idx, nl, udp, mm.spi);
		if (session >= 0)
			break;
	}
	for (i = 0; i < sizeof(len_seen); i++)
		n += __builtin_popcount(len_seen[i]);
	sh->lengths_seen = n;
	prof(-1);
	if (getenv("ESPINTCP_FUZZ_DUMP"))
		fprintf(stderr, "time: gen %.2f write %.2f recv %.2f poll %.2f drain %.2f\n"
			"time: end %.2f esp-wait %.2f setup %.2f\n",
			prof_s[0], prof_s[1], prof_s[2], prof_s[3], prof_s[4],
			prof_s[5], prof_s[6], prof_s[7]);
	/* A run that sent valid ESP but saw none come out tested nothing. */
	CHECK(!sh->esp_sent || sh->esp_delivered,
	      "no ESP packet was ever delivered (%llu sent)", sh->esp_sent);
	_exit(0);
}

/* ------------------------------------------------------------------ */
/*
 * calls: connections whose raw peer checks the stream it receives, and
 * random call sequences on their espintcp sockets. IKE messages carry
 * (tag, seq, length) and a pattern: the raw peer accepts only whole frames,
 * messages whose send() succeeded, in order, and ESP of known SPIs.
 */

#define NSLOT		3
#define MAXFD		8
#define MAIN_TAG	1
#define RAW_TAG		2
#define CHILD_TAG	0x100
#define IKE_HDR		20	/* marker, magic, tag, seq, length */
#define TX_SEQS		0x100000
#define TRAFFIC_SESS	0xcafe

struct slot {
	int idx;
	struct conn c;
	int fds[MAXFD], nfds;
	bool open, wr_shut, rd_shut, raw_gone, reset, raw_eof;
	uint32_t tx_seq, tx_last_seen;
	uint8_t *tx_ok;			/* seqs whose send() succeeded */
	uint32_t child_last[16];
	uint32_t raw_seq, rx_last;
	uint8_t rbuf[2 * MAX_MSG];
	size_t rlen;
	struct sa out, in;
	bool out_on, in_on;
	uint32_t in_seq, in_id;
};

static struct slot slots[NSLOT];
static struct slot *cur_slots = slots;	/* what drain_all() reads */
static int cur_nslots = NSLOT;
/* SPIs of every outbound SA ever added (open addressing, 0 is empty):
 * a long run adds far more than any fixed table holds.
 */
static uint32_t *out_spis;
static size_t out_spis_size, n_out_spis;
static int calls_nl, calls_udp[2];

static void ike_msg(uint8_t *p, size_t len, uint32_t tag, uint32_t seq)
{
	size_t i;

	memset(p, 0, 4);
	put32(p + 4, IKE_MAGIC);
	put32(p + 8, tag);
	put32(p + 12, seq);
	put32(p + 16, len);
	for (i = IKE_HDR; i < len; i++)
		p[i] = pat(tag ^ seq, i);
}

/* 0 when @p (@n bytes of a message of @full bytes) is a prefix of ours. */
static int ike_msg_ok(const uint8_t *p, size_t n, size_t full, uint32_t *tag,
		      uint32_t *seq)
{
	uint8_t hdr[IKE_HDR];
	size_t i;

	if (full < IKE_HDR || n > full)
		return -1;
	/* A short prefix is checked as far as it goes. */
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, p, n < IKE_HDR ? n : IKE_HDR);
	if (get32(hdr) || (n >= 8 && get32(hdr + 4) != IKE_MAGIC) ||
	    (n >= IKE_HDR && get32(hdr + 16) != full))
		return -1;
	*tag = n >= 12 ? get32(hdr + 8) : 0;
	*seq = n >= 16 ? get32(hdr + 12) : 0;
	for (i = IKE_HDR; i < n; i++)
		if (p[i] != pat(*tag ^ *seq, i))
			return -1;
	return 0;
}

static size_t out_spi_slot(const uint32_t *tab, size_t size, uint32_t spi)
{
	size_t i = (spi * 2654435761u) & (size - 1);

	while (tab[i] && tab[i] != spi)
		i = (i + 1) & (size - 1);
	return i;
}

static bool out_spi_known(uint32_t spi)
{
	return out_spis && out_spis[out_spi_slot(out_spis, out_spis_size, spi)];
}

/* One frame the ULP wrote, as the raw peer sees it. */
static void raw_frame(struct slot *sl, const uint8_t *b, size_t len)
{
	uint32_t tag, seq;

	if (len >= 4 && get32(b)) {
		CHECK(out_spi_known(get32(b)),
		      "slot %d: ESP with SPI %#x that no SA of ours has",
		      sl->idx, get32(b));
		CHECK(len >= 8 + 4, "slot %d: ESP of %zu bytes", sl->idx, len);
		sh->esp_out_seen++;
		return;
	}
	CHECK(!ike_msg_ok(b, len, len, &tag, &seq) && len >= IKE_HDR,
	      "slot %d: IKE frame of %zu bytes that was never sent (or corrupted)",
	      sl->idx, len);
	if (tag == MAIN_TAG) {
		CHECK(seq < TX_SEQS && sl->tx_ok[seq],
		      "slot %d: message %u on the wire, but its send() failed",
		      sl->idx, seq);
		CHECK(seq > sl->tx_last_seen || !sl->tx_last_seen,
		      "slot %d: message %u after %u: reordered or repeated",
		      sl->idx, seq, sl->tx_last_seen);
		/* Every successful send before it arrived. */
		while (++sl->tx_last_seen < seq)
			CHECK(!sl->tx_ok[sl->tx_last_seen],
			      "slot %d: message %u was sent but never arrived",
			      sl->idx, sl->tx_last_seen);
	} else {
		unsigned int c = 0;	/* children run one at a time */

		CHECK(tag >= CHILD_TAG, "slot %d: unknown tag %u", sl->idx, tag);
		CHECK(seq > sl->child_last[c],
		      "slot %d: child message %u after %u", sl->idx, seq,
		      sl->child_last[c]);
		sl->child_last[c] = seq;
	}
	sh->ike_delivered++;
}

/* Read what the ULP sent; false once the raw side reached its end. */
static bool raw_drain(struct slot *sl)
{
	for (;;) {
		ssize_t n;
		size_t off = 0;

		if (sl->raw_gone || sl->raw_eof)
			return false;
		n = recv(sl->c.raw, sl->rbuf + sl->rlen,
			 sizeof(sl->rbuf) - sl->rlen, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			CHECK(n == 0 || errno == ECONNRESET || errno == EPIPE,
			      "slot %d: raw read: %s", sl->idx, strerror(errno));
			trace("slot %d raw end %zd, %zu bytes of a frame left",
			      sl->idx, n, sl->rlen);
			sl->raw_eof = true;
			return false;
		}
		sl->rlen += n;
		while (sl->rlen - off >= 2) {
			size_t l = get16(sl->rbuf + off);

			CHECK(l >= 2 + 4, "slot %d: the ULP sent Length %zu",
			      sl->idx, l);
			if (sl->rlen - off < l)
				break;
			raw_frame(sl, sl->rbuf + off + 2, l - 2);
			off += l;
		}
		memmove(sl->rbuf, sl->rbuf + off, sl->rlen - off);
		sl->rlen -= off;
	}
}

static void drain_all(void)
{
	static uint8_t buf[65536];
	int i;

	for (i = 0; i < cur_nslots; i++)
		if (cur_slots[i].c.raw >= 0)
			raw_drain(&cur_slots[i]);
	for (i = 0; i < 2 && calls_udp[i] >= 0; i++) {
		for (;;) {
			ssize_t n = recv(calls_udp[i], buf, sizeof(buf), MSG_DONTWAIT);
			uint32_t id;

			if (n < 0)
				break;
			CHECK(!esp_payload_ok(buf, n, TRAFFIC_SESS, &id),
			      "datagram of %zd bytes from ESP is not one we sealed", n);
			sh->esp_in_seen++;
		}
	}
}

static int slot_fd(struct rng *r, struct slot *sl)
{
	return sl->fds[rnd(r, sl->nfds)];
}

static void slot_sa_encap(struct slot *sl)
{
	sl->out.sport = sl->c.ulp_port;
	sl->out.dport = sl->c.raw_port;
	sl->in.sport = sl->c.raw_port;
	sl->in.dport = sl->c.ulp_port;
}

/* Close what is left of a slot's connection. */
static void slot_close(struct slot *sl)
{
	int i;

	for (i = 0; i < sl->nfds; i++)
		close(sl->fds[i]);
	sl->nfds = 0;
	if (sl->c.raw >= 0)
		close_rst(sl->c.raw);
	sl->c.raw = -1;
	sl->open = false;
}

static void slot_connect_fam(struct rng *r, struct slot *sl, int family)
{
	int err;

	if (!family)
		family = chance(r, 500) ? AF_INET6 : AF_INET;
	slot_close(sl);
	/* SAs are per family: a new family needs new SAs. */
	if (sl->out_on && sl->out.family != family) {
		sa_del(calls_nl, &sl->out);
		sl->out_on = false;
	}
	if (sl->in_on && sl->in.family != family) {
		sa_del(calls_nl, &sl->in);
		sl->in_on = false;
	}
	CHECK(!conn_open(&sl->c, family, NULL, 0, 0), "slot %d: connect: %s",
	      sl->idx, strerror(errno));
	sl->fds[0] = sl->c.ulp;
	sl->nfds = 1;
	sl->open = true;
	sl->wr_shut = false;
	sl->rd_shut = false;
	sl->raw_gone = false;
	sl->reset = false;
	sl->raw_eof = false;
	sl->rlen = 0;
	sl->tx_last_seen = sl->tx_seq;
	memset(sl->child_last, 0, sizeof(sl->child_last));
	sl->rx_last = 0;
	sl->raw_seq = 0;
	/* The SAs move to the new connection's ports, as after a reconnect. */
	slot_sa_encap(sl);
	if (sl->out_on) {
		err = sa_put(calls_nl, &sl->out, XFRM_MSG_UPDSA);
		CHECK(!err, "slot %d: move SA to new ports: %s", sl->idx,
		      strerror(-err));
	}
	if (sl->in_on) {
		err = sa_put(calls_nl, &sl->in, XFRM_MSG_UPDSA);
		CHECK(!err, "slot %d: move SA to new ports: %s", sl->idx,
		      strerror(-err));
	}
	trace("slot %d connect family %d ports %u->%u", sl->idx, family,
	      sl->c.raw_port, sl->c.ulp_port);
}

static void slot_connect(struct rng *r, struct slot *sl)
{
	slot_connect_fam(r, sl, 0);
}

static bool slot_healthy(const struct slot *sl)
{
	return sl->open && !sl->wr_shut && !sl->rd_shut && !sl->raw_gone &&
	       !sl->reset && !sl->raw_eof;
}

/*
 * Whether the kernel has a "tls" ULP at all (a trimmed debug kernel may
 * not): without it, asking for it fails with ENOENT before the ULP core
 * looks at the socket. Probed once on a socket that is not connected, where
 * an existing tls answers ENOTCONN.
 */
static bool tls_ulp_exists(void)
{
	static int known = -1;
	int fd;

	if (known < 0) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		known = fd < 0 ||
			setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 4) == 0 ||
			errno != ENOENT;
		if (fd >= 0)
			close(fd);
	}
	return known;
}

/* A send-family call with a random kind, size class and flags. */
static void op_send(struct rng *r, struct slot *sl, int fd, uint32_t tag,
		    uint32_t seq)
{
	static uint8_t buf[MAX_MSG + 16];
	static const int good[] = { MSG_DONTWAIT, MSG_NOSIGNAL, MSG_EOR };
	static const int bad[] = { MSG_MORE, MSG_OOB, MSG_CONFIRM, MSG_ZEROCOPY,
				   MSG_PROXY, MSG_FASTOPEN, MSG_DONTROUTE };
	int flags = MSG_NOSIGNAL, want = 0, kind = rnd(r, 5), err;
	size_t len;
	ssize_t ret;
	bool cmsg = false;
	unsigned int i;

	switch (rnd(r, 10)) {
	case 0:
		len = rnd(r, 4);
		want = EINVAL;
		break;
	case 1:
		len = rrange(r, MAX_IKE + 1, MAX_IKE + 16);
		want = EMSGSIZE;
		break;
	case 2:
		len = rrange(r, IKE_HDR, 70000);
		if (len > MAX_IKE)
			want = EMSGSIZE;
		break;
	default:
		len = rrange(r, IKE_HDR, 400);
	}
	ike_msg(buf, len < IKE_HDR ? IKE_HDR : len, tag, seq);
	if (len >= 4 && !want && chance(r, 50)) {
		buf[rnd(r, 4)] = 1;	/* not a marker */
		want = EINVAL;
	}
	for (i = 0; i < ARRAY_SIZE(good); i++)
		if (chance(r, 300))
			flags |= good[i];
	if (chance(r, 60)) {
		flags |= bad[rnd(r, ARRAY_SIZE(bad))];
		want = EOPNOTSUPP;
	}
	if (kind == 2 && chance(r, 100)) {
		cmsg = true;
		if (want != EOPNOTSUPP)
			want = EOPNOTSUPP;
	}
	/* The documented order: flags and control data, size, marker. */
	if (want == EINVAL && len > MAX_IKE)
		want = EMSGSIZE;

	if (kind == 3 || kind == 4)
		flags = MSG_NOSIGNAL;	/* write() has no flags */
	if ((kind == 3 || kind == 4) && want == EOPNOTSUPP)
		want = len > MAX_IKE ? EMSGSIZE : len < 4 ? EINVAL :
		       (len >= 4 && get32(buf)) ? EINVAL : 0;
	switch (kind) {
	case 0:
		ret = send(fd, buf, len, flags);
		break;
	case 1: {
		struct sockaddr_storage ss;
		socklen_t al = loop_addr(sl->c.family, 1, &ss);

		ret = sendto(fd, buf, len, flags, chance(r, 500) ? (void *)&ss : NULL,
			     al);
		break;
	}
	case 2: {
		char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
		size_t a = len ? rnd(r, len) : 0;
		struct iovec iov[2] = { { buf, a }, { buf + a, len - a } };
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

		if (cmsg) {
			struct cmsghdr *c;

			msg.msg_control = cbuf;
			msg.msg_controllen = sizeof(cbuf);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_IP;
			c->cmsg_type = IP_TTL;
			c->cmsg_len = CMSG_LEN(sizeof(int));
		}
		ret = sendmsg(fd, &msg, flags);
		break;
	}
	case 3:
		ret = write(fd, buf, len);
		break;
	default: {
		size_t a = len ? rnd(r, len) : 0;
		struct iovec iov[2] = { { buf, a }, { buf + a, len - a } };

		ret = writev(fd, iov, 2);
		break;
	}
	}
	err = errno;
	trace("slot %d fd %d send kind %d len %zu flags %#x tag %u seq %u = %zd %s",
	      sl->idx, fd, kind, len, flags, tag, seq, ret,
	      ret < 0 ? strerror(err) : "");
	/* The VFS completes an empty write() without asking the socket. */
	if ((kind == 3 || kind == 4) && !len && !ret)
		return;
	if (want) {
		CHECK(ret < 0 && err == want,
		      "send of %zu bytes, flags %#x%s: %zd (%s), want %s", len,
		      flags, cmsg ? " with cmsg" : "", ret,
		      ret < 0 ? strerror(err) : "success", strerror(want));
		return;
	}
	if (ret >= 0) {
		CHECK(ret == (ssize_t)len, "send of %zu bytes returned %zd", len,
		      ret);
		if (tag == MAIN_TAG)
			sl->tx_ok[seq] = 1;
		sh->ike_sent++;
		return;
	}
	switch (err) {
	case EAGAIN:
	case EINTR:
		return;
	case EPIPE:
	case ECONNRESET:
	case ETIMEDOUT:
	case EPROTO:
		CHECK(!slot_healthy(sl), "send: %s on a healthy connection",
		      strerror(err));
		return;
	default:
		fail("send of %zu bytes, flags %#x: unexpected %s", len, flags,
		     strerror(err));
	}
}

static void check_ike_in(struct slot *sl, const uint8_t *buf, size_t copied,
			 size_t full, bool peek)
{
	uint32_t tag, seq;

	CHECK(!ike_msg_ok(buf, copied, full, &tag, &seq),
	      "slot %d: received %zu of %zu bytes that the peer never sent",
	      sl->idx, copied, full);
	if (copied >= 16) {
		CHECK(tag == RAW_TAG, "slot %d: received tag %u", sl->idx, tag);
		CHECK(seq > sl->rx_last || (peek && seq == sl->rx_last) ||
		      !sl->rx_last, "slot %d: received message %u after %u",
		      sl->idx, seq, sl->rx_last);
		if (!peek)
			sl->rx_last = seq;
	}
}

static void op_recv(struct rng *r, struct slot *sl, int fd)
{
	static uint8_t buf[MAX_MSG + 16];
	static const int good[] = { MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC, MSG_WAITALL };
	static const int bad[] = { MSG_OOB, MSG_ERRQUEUE };
	int flags = MSG_DONTWAIT, err, mflags = 0;
	size_t buflen = chance(r, 200) ? rnd(r, 24) : sizeof(buf);
	bool bad_flags = false;
	struct iovec iov = { buf, buflen };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t ret;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(good); i++)
		if (chance(r, 250))
			flags |= good[i];
	if (chance(r, 30)) {
		flags |= bad[rnd(r, ARRAY_SIZE(bad))];
		bad_flags = true;
	}
	if (!(flags & MSG_DONTWAIT) && chance(r, 950))
		flags |= MSG_DONTWAIT;	/* else SO_RCVTIMEO bounds it */
	ret = recvmsg(fd, &msg, flags);
	err = errno;
	mflags = msg.msg_flags;
	trace("slot %d fd %d recv buf %zu flags %#x = %zd %s", sl->idx, fd,
	      buflen, flags, ret, ret < 0 ? strerror(err) : "");
	if (bad_flags) {
		CHECK(ret < 0 && err == EOPNOTSUPP,
		      "recv flags %#x: %zd (%s), want EOPNOTSUPP", flags, ret,
		      strerror(err));
		return;
	}
	if (ret < 0) {
		CHECK(err == EAGAIN || err == EINTR ||
		      (!slot_healthy(sl) && (err == ECONNRESET || err == EPIPE ||
					     err == ETIMEDOUT)),
		      "recv: %s", strerror(err));
		return;
	}
	if (ret == 0 && !(mflags & MSG_TRUNC)) {
		CHECK(!slot_healthy(sl), "slot %d: end of stream on a healthy connection",
		      sl->idx);
		return;
	}
	if (mflags & MSG_TRUNC) {
		CHECK(flags & MSG_TRUNC ? (size_t)ret > buflen : (size_t)ret == buflen,
		      "recv: MSG_TRUNC with %zd for a buffer of %zu", ret, buflen);
	}
	check_ike_in(sl, buf, ret < (ssize_t)buflen ? ret : buflen,
		     (flags & MSG_TRUNC) || !(mflags & MSG_TRUNC) ? (size_t)ret :
		     buflen >= IKE_HDR ? get32(buf + 16) : MAX_MSG,
		     flags & MSG_PEEK);
}

static void op_setsockopt(struct rng *r, struct slot *sl, int fd)
{
	static const struct {
		int level, opt;
		int vals[4];
	} opts[] = {
		{ SOL_SOCKET, SO_RCVBUF, { 1, 4096, 65536, 1 << 20 } },
		{ SOL_SOCKET, SO_SNDBUF, { 1, 4096, 65536, 1 << 20 } },
		{ SOL_SOCKET, SO_RCVLOWAT, { 1, 100, 70000, 0 } },
		{ SOL_SOCKET, SO_KEEPALIVE, { 0, 1, 1, 0 } },
		{ SOL_SOCKET, SO_PRIORITY, { 0, 6, 3, 1 } },
		{ SOL_SOCKET, SO_MARK, { 0, 7, 0, 1 } },
		{ SOL_SOCKET, SO_ZEROCOPY, { 0, 1, 0, 1 } },
		{ SOL_SOCKET, SO_OOBINLINE, { 0, 1, 0, 1 } },
		{ SOL_SOCKET, SO_TIMESTAMP, { 0, 1, 0, 1 } },
		{ SOL_SOCKET, SO_BUSY_POLL, { 0, 10, 0, 50 } },
		{ IPPROTO_TCP, TCP_NODELAY, { 0, 1, 0, 1 } },
		{ IPPROTO_TCP, TCP_CORK, { 1, 0, 0, 0 } },
		{ IPPROTO_TCP, TCP_MAXSEG, { 536, 1000, 64, 1400 } },
		{ IPPROTO_TCP, TCP_KEEPIDLE, { 1, 60, 7200, 0 } },
		{ IPPROTO_TCP, TCP_USER_TIMEOUT, { 0, 1000, 30000, 0 } },
		{ IPPROTO_TCP, TCP_QUICKACK, { 0, 1, 0, 1 } },
		{ IPPROTO_TCP, TCP_INQ, { 0, 1, 0, 1 } },
		{ IPPROTO_TCP, TCP_NOTSENT_LOWAT, { 0, 1, 16384, 1 << 20 } },
		{ IPPROTO_TCP, TCP_WINDOW_CLAMP, { 0, 1024, 65535, 1 << 20 } },
		{ IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, { 0, 1, 0, 1 } },
		{ IPPROTO_TCP, TCP_LINGER2, { 0, 1, -1, 10 } },
		{ IPPROTO_IP, IP_TOS, { 0, 0x10, 0x28, 0xb8 } },
		{ IPPROTO_IP, IP_TTL, { 1, 64, 255, 0 } },
	};
	int k = rnd(r, ARRAY_SIZE(opts) + 6), ret, err;

	if (k < (int)ARRAY_SIZE(opts)) {
		int v = opts[k].vals[rnd(r, 4)];

		ret = setsockopt(fd, opts[k].level, opts[k].opt, &v, sizeof(v));
		trace("slot %d fd %d setsockopt %d/%d = %d: %d", sl->idx, fd,
		      opts[k].level, opts[k].opt, v, ret);
		/* TCP would hold the parser back until that many bytes. */
		CHECK(ret || opts[k].level != SOL_SOCKET ||
		      opts[k].opt != SO_RCVLOWAT,
		      "slot %d: SO_RCVLOWAT %d accepted", sl->idx, v);
		return;
	}
	switch (k - ARRAY_SIZE(opts)) {
	case 0:
	case 1: {
		/* A second ULP, or this one again. */
		const char *name = k - ARRAY_SIZE(opts) ? "tls" : "espintcp";

		ret = setsockopt(fd, IPPROTO_TCP, TCP_ULP, name, strlen(name) + 1);
		err = errno;
		trace("slot %d fd %d TCP_ULP %s = %d", sl->idx, fd, name, ret);
		CHECK(ret < 0 && (err == EEXIST ||
				  (!slot_healthy(sl) && err == ENOTCONN) ||
				  (err == ENOENT && !strcmp(name, "tls") &&
				   !tls_ulp_exists())),
		      "setsockopt(TCP_ULP, %s) on an espintcp socket: %d (%s), want EEXIST",
		      name, ret, strerror(err));
		break;
	}
	case 2:
		set_timeo(fd, SO_RCVTIMEO, rrange(r, 1, 100));
		break;
	case 3:
		set_timeo(fd, SO_SNDTIMEO, rrange(r, 1, 500));
		break;
	case 4: {
		/* Only an immediate linger: a timed one makes close() wait. */
		struct linger lin = { .l_onoff = rnd(r, 2), .l_linger = 0 };

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
		trace("slot %d fd %d linger %d", sl->idx, fd, lin.l_onoff);
		break;
	}
	default:
		if (chance(r, 100)) {
			/* Repair mode would rewrite the queues under the ULP. */
			int on = 1;

			ret = setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof(on));
			trace("slot %d fd %d TCP_REPAIR = %d", sl->idx, fd, ret);
			CHECK(ret == -1 && errno == EOPNOTSUPP,
			      "TCP_REPAIR under the ULP: %d (%s), want EOPNOTSUPP",
			      ret, ret ? strerror(errno) : "success");
		} else {
			const char *cc = chance(r, 500) ? "reno" : "cubic";

			setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc));
		}
	}
}

static void op_getsockopt(struct rng *r, struct slot *sl, int fd)
{
	static const int sopts[] = { SO_ERROR, SO_RCVBUF, SO_SNDBUF, SO_TYPE,
				     SO_PROTOCOL, SO_DOMAIN, SO_ACCEPTCONN,
				     SO_RCVLOWAT, SO_MARK, SO_COOKIE };
	static const int topts[] = { TCP_INFO, TCP_INQ, TCP_MAXSEG, TCP_CORK,
				     TCP_CONGESTION, TCP_USER_TIMEOUT };
	uint8_t buf[512];
	socklen_t len = rnd(r, 3) ? sizeof(buf) : rnd(r, 8);
	int ret;

	switch (rnd(r, 3)) {
	case 0: {
		char name[32] = "";

		len = sizeof(name);
		ret = getsockopt(fd, IPPROTO_TCP, TCP_ULP, name, &len);
		trace("slot %d fd %d get TCP_ULP = %d %s", sl->idx, fd, ret, name);
		CHECK(!ret && !strcmp(name, "espintcp"),
		      "getsockopt(TCP_ULP) = %d (%s) \"%s\", want espintcp",
		      ret, strerror(errno), name);
		break;
	}
	case 1:
		getsockopt(fd, SOL_SOCKET, sopts[rnd(r, ARRAY_SIZE(sopts))], buf,
			   &len);
		break;
	default:
		getsockopt(fd, IPPROTO_TCP, topts[rnd(r, ARRAY_SIZE(topts))], buf,
			   &len);
	}
}

/* sendfile() and splice() into the socket: never, a page is not a message. */
static void op_splice(struct rng *r, struct slot *sl, int fd)
{
	static int file = -1;
	int p[2], ret, err;
	ssize_t n;

	if (file < 0) {
		char path[] = "/tmp/espintcp-fuzz-XXXXXX";
		uint8_t buf[8192];

		file = mkstemp(path);
		CHECK(file >= 0, "mkstemp: %s", strerror(errno));
		unlink(path);
		/* Bytes that would frame as an IKE message. */
		ike_msg(buf, sizeof(buf), MAIN_TAG, 0);
		put16(buf, sizeof(buf));
		CHECK(write(file, buf, sizeof(buf)) == sizeof(buf), "write file");
	}
	switch (rnd(r, 3)) {
	case 0: {
		off_t off = rnd(r, 100);
		size_t cnt = rrange(r, 1, 8000);

		n = sendfile(fd, file, &off, cnt);
		err = errno;
		trace("slot %d fd %d sendfile %zu = %zd", sl->idx, fd, cnt, n);
		CHECK(n < 0 && err == EOPNOTSUPP,
		      "sendfile to an espintcp socket: %zd (%s), want EOPNOTSUPP",
		      n, n < 0 ? strerror(err) : "bytes sent");
		break;
	}
	case 1:
		CHECK(!pipe2(p, O_NONBLOCK | O_CLOEXEC), "pipe: %s", strerror(errno));
		CHECK(write(p[1], "\0\0\0\0abcdefgh", 12) == 12, "pipe write");
		n = splice(p[0], NULL, fd, NULL, 12, SPLICE_F_NONBLOCK);
		err = errno;
		trace("slot %d fd %d splice in = %zd", sl->idx, fd, n);
		CHECK(n < 0 && err == EOPNOTSUPP,
		      "splice into an espintcp socket: %zd (%s), want EOPNOTSUPP",
		      n, n < 0 ? strerror(err) : "bytes sent");
		close(p[0]);
		close(p[1]);
		break;
	default: {
		/* Out of the socket: if anything, a message or its head. */
		static uint8_t buf[MAX_MSG];

		CHECK(!pipe2(p, O_NONBLOCK | O_CLOEXEC), "pipe: %s", strerror(errno));
		n = splice(fd, NULL, p[1], NULL, rrange(r, 1, MAX_MSG),
			   SPLICE_F_NONBLOCK);
		err = errno;
		trace("slot %d fd %d splice out = %zd %s", sl->idx, fd, n,
		      n < 0 ? strerror(err) : "");
		if (n > 0) {
			ret = read(p[0], buf, sizeof(buf));
			CHECK(ret == n, "pipe holds %d of %zd bytes", ret, n);
			check_ike_in(sl, buf, n, n >= IKE_HDR ? get32(buf + 16) :
				     MAX_MSG, false);
		} else if (n == 0) {
			CHECK(!slot_healthy(sl),
			      "splice: end of stream on a healthy connection");
		} else {
			CHECK(err == EAGAIN || err == EINVAL || err == EOPNOTSUPP ||
			      (!slot_healthy(sl) &&
			       (err == ECONNRESET || err == EPIPE)),
			      "splice out of an espintcp socket: %s", strerror(err));
		}
		close(p[0]);
		close(p[1]);
	}
	}
}

static void op_misc(struct rng *r, struct slot *sl, int fd)
{
	struct sockaddr_storage ss;
	socklen_t al;
	int ret, err, v;

	switch (rnd(r, 7)) {
	case 0:
		/* Disconnect: the framing cannot survive it. */
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = AF_UNSPEC;
		ret = connect(fd, (void *)&ss, sizeof(ss));
		err = errno;
		trace("slot %d fd %d connect(AF_UNSPEC) = %d", sl->idx, fd, ret);
		CHECK(ret < 0 && err == EOPNOTSUPP,
		      "connect(AF_UNSPEC) on an espintcp socket: %d (%s), want EOPNOTSUPP",
		      ret, strerror(err));
		break;
	case 1:
		ret = listen(fd, 1);
		err = errno;
		CHECK(ret < 0 && (err == EINVAL || err == EOPNOTSUPP),
		      "listen() on an espintcp socket: %d (%s)", ret,
		      strerror(err));
		break;
	case 2:
		al = loop_addr(sl->c.family, 0, &ss);
		ret = bind(fd, (void *)&ss, al);
		/* A closed TCP socket has given its port back and may bind. */
		CHECK(ret < 0 || !slot_healthy(sl),
		      "bind() on a connected espintcp socket succeeded");
		break;
	case 3:
		ioctl(fd, rnd(r, 2) ? SIOCINQ : SIOCOUTQ, &v);
		break;
	case 4:
		v = rnd(r, 2);
		ioctl(fd, FIONBIO, &v);
		break;
	case 5: {
		struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };

		ret = poll(&pfd, 1, 0);
		CHECK(ret >= 0 && !(pfd.revents & POLLNVAL), "poll: %d %#x", ret,
		      pfd.revents);
		break;
	}
	default:
		set_nonblock(fd, rnd(r, 2));
	}
}

static void op_shutdown(struct rng *r, struct slot *sl, int fd)
{
	int how = rnd(r, 3), ret = shutdown(fd, how), err = errno;

	trace("slot %d fd %d shutdown %d = %d", sl->idx, fd, how, ret);
	CHECK(!ret || (err == ENOTCONN && !slot_healthy(sl)),
	      "shutdown(%d): %s", how, strerror(err));
	if (how != SHUT_WR)
		sl->rd_shut = true;
	if (how != SHUT_RD)
		sl->wr_shut = true;
}

static void op_close(struct rng *r, struct slot *sl)
{
	int i = rnd(r, sl->nfds);

	trace("slot %d close fd %d (%d left)", sl->idx, sl->fds[i], sl->nfds - 1);
	CHECK(!close(sl->fds[i]), "close: %s", strerror(errno));
	sl->fds[i] = sl->fds[--sl->nfds];
	if (!sl->nfds)
		sl->open = false;
}

static void op_dup(struct rng *r, struct slot *sl, int fd)
{
	int nfd;

	if (sl->nfds >= MAXFD)
		return;
	nfd = rnd(r, 2) ? dup(fd) : fcntl(fd, F_DUPFD_CLOEXEC, 100);
	CHECK(nfd >= 0, "dup: %s", strerror(errno));
	sl->fds[sl->nfds++] = nfd;
	trace("slot %d dup %d -> %d", sl->idx, fd, nfd);
}

static uint32_t child_seq_base;

/* A child process uses the inherited sockets, then exits. */
static void op_fork(struct rng *r, struct slot *sl)
{
	unsigned long long seed = rnext(r), end;
	uint32_t base = ++child_seq_base * 64;
	int status;
	pid_t pid;

	trace("slot %d fork seed %#llx", sl->idx, seed);
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		struct rng cr = { seed };
		int i, n = rrange(&cr, 1, 8);

		in_child_proc = true;
		for (i = 0; i < n; i++) {
			int fd = slot_fd(&cr, sl);

			switch (rnd(&cr, 4)) {
			case 0:
			case 1:
				op_send(&cr, sl, fd, CHILD_TAG, base + i + 1);
				break;
			case 2:
				op_recv(&cr, sl, fd);
				break;
			default:
				close(fd);	/* ours only */
				_exit(0);
			}
		}
		_exit(0);
	}
	end = now_ns() + (WAIT_MS + 10000) * 1000000ULL;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail("a forked child did not finish in %d ms", WAIT_MS + 10000);
		}
		raw_drain(sl);
		usleep(1000);
	}
	CHECK(WIFEXITED(status) && !WEXITSTATUS(status),
	      "forked child failed: %s", sh->why);
}

static void note_out_spi(uint32_t spi)
{
	if (!spi || out_spi_known(spi))
		return;
	/* At most half full: grow by rehashing into twice the size. */
	if (2 * (n_out_spis + 1) > out_spis_size) {
		size_t size = out_spis_size ? 2 * out_spis_size : 1024, i;
		uint32_t *tab = calloc(size, sizeof(*tab));

		CHECK(tab, "out of memory");
		for (i = 0; i < out_spis_size; i++)
			if (out_spis[i])
				tab[out_spi_slot(tab, size, out_spis[i])] = out_spis[i];
		free(out_spis);
		out_spis = tab;
		out_spis_size = size;
	}
	out_spis[out_spi_slot(out_spis, out_spis_size, spi)] = spi;
	n_out_spis++;
}

/* Add, update, move or delete one of the slot's SAs. */
static void op_sa(struct rng *r, struct slot *sl)
{
	bool outb = rnd(r, 2);
	struct sa *x = outb ? &sl->out : &sl->in;
	bool *on = outb ? &sl->out_on : &sl->in_on;
	int k = rnd(r, 4), err;

	if (!*on) {
		x->family = sl->c.family;
		addr_of(x->family, &x->src);
		addr_of(x->family, &x->dst);
	}
	slot_sa_encap(sl);
	switch (k) {
	case 0:
		if (!*on) {
			static uint32_t next_spi = 0x40000000;

			x->spi = ++next_spi;
			x->alg = outb && rnd(r, 2) ? ALG_GCM : ALG_NULL;
			if (outb)
				note_out_spi(x->spi);
		}
		err = sa_put(calls_nl, x, XFRM_MSG_NEWSA);
		trace("slot %d SA %#x add = %d", sl->idx, x->spi, err);
		CHECK(*on ? err == -EEXIST : !err, "add SA %#x: %s (%s)", x->spi,
		      strerror(-err), *on ? "exists" : "new");
		*on = true;
		break;
	case 1: {
		/* Move it onto another slot's connection, as a migration. */
		struct slot *o = &cur_slots[rnd(r, cur_nslots)];

		if (!*on || !o->open || o->c.family != x->family)
			return;
		x->sport = outb ? o->c.ulp_port : o->c.raw_port;
		x->dport = outb ? o->c.raw_port : o->c.ulp_port;
		err = sa_put(calls_nl, x, XFRM_MSG_UPDSA);
		trace("slot %d SA %#x moved to slot %d = %d", sl->idx, x->spi,
		      o->idx, err);
		CHECK(!err, "move SA %#x: %s", x->spi, strerror(-err));
		slot_sa_encap(sl);
		err = sa_put(calls_nl, x, XFRM_MSG_UPDSA);
		CHECK(!err, "move SA %#x back: %s", x->spi, strerror(-err));
		break;
	}
	case 2:
		if (!x->spi)
			return;
		err = sa_put(calls_nl, x, XFRM_MSG_UPDSA);
		trace("slot %d SA %#x update = %d", sl->idx, x->spi, err);
		CHECK(*on ? !err : err == -ESRCH || err == -ENOENT,
		      "update SA %#x: %s", x->spi, strerror(-err));
		break;
	default:
		if (!x->spi)
			return;
		err = sa_del(calls_nl, x);
		trace("slot %d SA %#x delete = %d", sl->idx, x->spi, err);
		CHECK(*on ? !err : err == -ESRCH || err == -ENOENT,
		      "delete SA %#x: %s", x->spi, strerror(-err));
		*on = false;
	}
}

/* The raw peer sends: IKE, ESP for the inbound SA, a keepalive, or RST. */
static void op_raw(struct rng *r, struct slot *sl)
{
	static uint8_t buf[2 + 8 + 8 + 1400 + 8];
	size_t len;
	ssize_t n;

	if (sl->raw_gone || sl->raw_eof)
		return;
	switch (rnd(r, 8)) {
	case 0:
	case 1:
	case 2:
		len = rrange(r, IKE_HDR, 1000);
		ike_msg(buf + 2, len, RAW_TAG, ++sl->raw_seq);
		put16(buf, len + 2);
		len += 2;
		break;
	case 3:
	case 4:
	case 5:
		if (!sl->in_on)
			return;
		len = esp_seal(buf, sl->c.family, sl->in.spi, ++sl->in_seq,
			       TRAFFIC_SESS, sl->in_id++, rrange(r, ESP_PL_HDR, 1400));
		break;
	case 6:
		memcpy(buf, "\0\3\xff", 3);
		len = 3;
		break;
	default:
		if (!chance(r, 100))
			return;
		trace("slot %d raw RST", sl->idx);
		close_rst(sl->c.raw);
		sl->c.raw = -1;
		sl->raw_gone = true;
		sl->reset = true;
		return;
	}
	/* Whole frames only: the stream mode does the splitting. */
	set_nonblock(sl->c.raw, false);
	set_timeo(sl->c.raw, SO_SNDTIMEO, WAIT_MS);
	n = send(sl->c.raw, buf, len, MSG_NOSIGNAL);
	set_nonblock(sl->c.raw, true);
	trace("slot %d raw send %zu = %zd", sl->idx, len, n);
	if (n != (ssize_t)len) {
		CHECK(!slot_healthy(sl) || sl->wr_shut,
		      "raw peer cannot write: %zd %s", n, strerror(errno));
		sl->raw_eof = true;	/* whatever follows is unframed */
	}
}

/* Every byte the raw peer wrote was parsed on the ULP side: none waits to
 * be sent, none waits for strparser.
 */
static bool raw_all_parsed(struct slot *sl, int fd)
{
	int unsent = -1, unread = -1;

	return !ioctl(sl->c.raw, SIOCOUTQNSD, &unsent) && !unsent &&
	       !ioctl(fd, SIOCINQ, &unread) && !unread;
}

/* Write the IKE message of a sync from the raw peer. */
static void sync_write(struct slot *sl, uint8_t *buf, uint32_t seq)
{
	size_t len = 64;

	trace("slot %d sync %u", sl->idx, seq);
	ike_msg(buf + 2, len, RAW_TAG, seq);
	put16(buf, len + 2);
	set_nonblock(sl->c.raw, false);
	CHECK(!write_all(sl->c.raw, buf, len + 2), "raw write: %s", strerror(errno));
	set_nonblock(sl->c.raw, true);
}

/*
 * A healthy connection still carries IKE both ways, within WAIT_MS. The
 * raw peer's message may be dropped, legitimately, when it arrives while
 * the unread messages before it fill SO_RCVBUF (a small one, or many
 * messages that no recv op read). Once everything was parsed and read, a
 * second message finds an empty queue and must arrive.
 */
static void op_sync(struct slot *sl)
{
	static uint8_t buf[MAX_MSG];
	uint32_t seq = ++sl->raw_seq, want;
	unsigned long long end = now_ns() + WAIT_MS * 1000000ULL;
	int fd = sl->fds[0], idle = 0;
	bool again = false;

	if (!slot_healthy(sl))
		return;
	sync_write(sl, buf, seq);
	while (sl->rx_last != seq) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		CHECK(now_ns() < end, "slot %d: IKE message %u not received within %d ms",
		      sl->idx, seq, WAIT_MS);
		poll(&pfd, 1, 100);
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			/* Dropped, if it stays so for a second. */
			idle = raw_all_parsed(sl, fd) ? idle + 1 : 0;
			if (idle >= 10 && !again) {
				trace("slot %d sync %u dropped with the queue full",
				      sl->idx, seq);
				seq = ++sl->raw_seq;
				sync_write(sl, buf, seq);
				again = true;
				idle = 0;
			}
			continue;
		}
		idle = 0;
		CHECK(n > 0, "slot %d: recv while waiting for %u: %zd %s", sl->idx,
		      seq, n, strerror(errno));
		check_ike_in(sl, buf, n, n, false);
		raw_drain(sl);
	}
	want = ++sl->tx_seq;
	ike_msg(buf, 64, MAIN_TAG, want);
	for (;;) {
		ssize_t n = send(fd, buf, 64, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n == 64)
			break;
		CHECK(n < 0 && errno == EAGAIN && now_ns() < end,
		      "slot %d: send: %zd %s", sl->idx, n, strerror(errno));
		raw_drain(sl);
		usleep(1000);
	}
	sl->tx_ok[want] = 1;
	while (sl->tx_last_seen < want) {
		CHECK(now_ns() < end, "slot %d: message %u not on the wire within %d ms",
		      sl->idx, want, WAIT_MS);
		CHECK(raw_drain(sl), "slot %d: stream ended before message %u",
		      sl->idx, want);
		usleep(1000);
	}
}

/* UDP through the out policies until killed: ESP from the ULPs. */
static pid_t traffic_start(void)
{
	pid_t pid = fork();

	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		int fd[2] = { socket(AF_INET, SOCK_DGRAM, 0),
			      socket(AF_INET6, SOCK_DGRAM, 0) };
		uint8_t buf[600];
		uint32_t id = 0;

		in_child_proc = true;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			struct timespec ts = { 0, 2000000 };
			int i, f;

			for (i = 0; i < NSLOT; i++) {
				for (f = 0; f < 2; f++) {
					struct sockaddr_storage ss;
					socklen_t al = loop_addr(f ? AF_INET6 : AF_INET,
								 UDP_POL + i, &ss);

					esp_payload(buf, sizeof(buf), TRAFFIC_SESS, id++);
					sendto(fd[f], buf, sizeof(buf), MSG_DONTWAIT,
					       (void *)&ss, al);
				}
			}
			nanosleep(&ts, NULL);
		}
	}
	return pid;
}

static void mode_calls(unsigned long long ncalls, int64_t only)
{
	unsigned long long seq;
	pid_t traffic;
	int i, err;

	new_netns();
	calls_nl = nl_open();
	trace("calls: netlink");
	listeners();
	calls_udp[0] = udp_sink(AF_INET, UDP_SINK);
	calls_udp[1] = udp_sink(AF_INET6, UDP_SINK);
	for (i = 0; i < NSLOT; i++) {
		struct rng r = { mix(sh->seed, ~(unsigned long long)i) };

		slots[i].idx = i;
		slots[i].c.raw = -1;
		slots[i].tx_ok = calloc(TX_SEQS, 1);
		CHECK(slots[i].tx_ok, "out of memory");
		slots[i].out.reqid = i + 1;
		slots[i].in.reqid = 100 + i;
		slots[i].out.encap = TCP_ENCAP_ESPINTCP;
		slots[i].in.encap = TCP_ENCAP_ESPINTCP;
		err = pol_add(calls_nl, AF_INET, UDP_POL + i, i + 1);
		CHECK(!err, "policy: %s", strerror(-err));
		err = pol_add(calls_nl, AF_INET6, UDP_POL + i, i + 1);
		CHECK(!err, "policy: %s", strerror(-err));
		slot_connect(&r, &slots[i]);
	}
	traffic = traffic_start();
	trace("calls: set up");

	for (seq = only >= 0 ? only : 0; sh->calls < ncalls && !out_of_time();
	     seq++) {
		struct rng r = { mix(sh->seed, seq) };
		struct slot *sl = &slots[rnd(&r, NSLOT)];
		int n = rrange(&r, 1, 12);

		sh->unit = seq;
		sh->unit_seed = r.s;
		if (sh->trace_len > TRACE_MAX / 2)
			sh->trace_len = 0;	/* keep the recent past */
		trace("sequence %llu slot %d ops %d", seq, sl->idx, n);
		if (!sl->open || (sl->raw_eof && chance(&r, 500)))
			slot_connect(&r, sl);
		while (n-- && sl->open) {
			int fd = slot_fd(&r, sl), k = rnd(&r, 1000);

			if (k < 200)
				op_send(&r, sl, fd, MAIN_TAG,
					sl->tx_seq < TX_SEQS - 1 ? ++sl->tx_seq : sl->tx_seq);
			else if (k < 350)
				op_recv(&r, sl, fd);
			else if (k < 430)
				op_setsockopt(&r, sl, fd);
			else if (k < 480)
				op_getsockopt(&r, sl, fd);
			else if (k < 520)
				op_splice(&r, sl, fd);
			else if (k < 560)
				op_misc(&r, sl, fd);
			else if (k < 570)
				op_shutdown(&r, sl, fd);
			else if (k < 590)
				op_close(&r, sl);
			else if (k < 620)
				op_dup(&r, sl, fd);
			else if (k < 640)
				op_fork(&r, sl);
			else if (k < 750)
				op_sa(&r, sl);
			else if (k < 950)
				op_raw(&r, sl);
			else
				op_sync(sl);
			drain_all();
		}
		sh->calls++;
		if (only >= 0)
			break;
	}
	kill(traffic, SIGKILL);
	waitpid(traffic, NULL, 0);
	for (i = 0; i < NSLOT; i++)
		op_sync(&slots[i]);
	drain_all();
	/* ESP went both ways, or the run tested nothing of it. */
	if (sh->calls >= 500 && only < 0) {
		CHECK(sh->esp_out_seen, "no ESP ever came out of an espintcp socket");
		CHECK(sh->esp_in_seen, "no ESP ever went into XFRM from a stream");
	}
	_exit(0);
}

/* ------------------------------------------------------------------ */
/*
 * lifetime: batches of connections, each batch in its own network
 * namespace (a child process), opened and torn down under traffic; some
 * batches end by deleting the namespace under live sockets and SAs. One
 * batch in a few holds sockets and SAs while rmmod is tried.
 */

static const char * const mods[] = { "espintcp", "esp4", "esp6" };

static bool mod_loaded(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/module/%s/initstate", name);
	return !access(path, F_OK);
}

static int mod_refcnt(const char *name)
{
	char path[128];
	int v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/%s/refcnt", name);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int rmmod(const char *name)
{
	return syscall(__NR_delete_module, name, O_NONBLOCK);
}

static int insmod(const char *name)
{
	char path[4096];
	int fd, ret;

	snprintf(path, sizeof(path), "%s/%s.ko", ko_dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ret = syscall(__NR_finit_module, fd, "", 0);
	close(fd);
	return ret;
}

/* Put back whatever of ours is missing; false if one cannot be loaded. */
static bool reload_modules(void)
{
	bool ok = true;
	unsigned int i;

	if (!ko_dir)
		return true;
	for (i = 0; i < ARRAY_SIZE(mods); i++)
		if (!mod_loaded(mods[i]) && insmod(mods[i])) {
			fprintf(stderr, "# insmod %s: %s\n", mods[i], strerror(errno));
			ok = false;
		}
	return ok;
}

/* A module other than esp4/esp6 that uses espintcp's symbols: its name. */
static bool espintcp_foreign_holder(char *name, size_t size)
{
	DIR *d = opendir("/sys/module/espintcp/holders");
	struct dirent *e;
	bool found = false;

	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.' || !strcmp(e->d_name, "esp4") ||
		    !strcmp(e->d_name, "esp6"))
			continue;
		snprintf(name, size, "%s", e->d_name);
		found = true;
	}
	closedir(d);
	return found;
}

/* Can this run unload and reload our modules? Only ours, only idle ones. */
static bool rmmod_possible(void)
{
	char path[4096];
	unsigned int i;

	if (!ko_dir)
		return false;
	for (i = 0; i < ARRAY_SIZE(mods); i++) {
		snprintf(path, sizeof(path), "%s/%s.ko", ko_dir, mods[i]);
		if (access(path, R_OK) || !mod_loaded(mods[i]))
			return false;
	}
	/* Something else built on espintcp (a test module) stays put. */
	if (espintcp_foreign_holder(path, sizeof(path))) {
		printf("# lifetime: %s holds espintcp\n", path);
		return false;
	}
	return mod_refcnt("esp4") >= 0 && mod_refcnt("esp6") >= 0;
}

/* espintcp's references other than live sockets: modules using its symbols. */
static int espintcp_holders(void)
{
	return mod_loaded("esp4") + mod_loaded("esp6");
}

struct life {
	struct slot sl[16];
	int n;
	int nl;
	struct rng r;
};

static void life_open(struct life *L, struct slot *sl, bool with_sas, int fam)
{
	int err;

	slot_connect_fam(&L->r, sl, fam);
	if (!with_sas)
		return;
	if (!sl->out_on) {
		sl->out.family = sl->c.family;
		sl->in.family = sl->c.family;
		addr_of(sl->c.family, &sl->out.src);
		addr_of(sl->c.family, &sl->out.dst);
		addr_of(sl->c.family, &sl->in.src);
		addr_of(sl->c.family, &sl->in.dst);
		sl->out.alg = rnd(&L->r, 2) ? ALG_GCM : ALG_NULL;
		sl->in.alg = ALG_NULL;
		slot_sa_encap(sl);
		err = sa_put(L->nl, &sl->out, XFRM_MSG_NEWSA);
		CHECK(!err, "add SA: %s", strerror(-err));
		err = sa_put(L->nl, &sl->in, XFRM_MSG_NEWSA);
		CHECK(!err, "add SA: %s", strerror(-err));
		sl->out_on = true;
		sl->in_on = true;
	}
}

/* Some traffic on a connection: IKE both ways, ESP both ways. */
static void life_traffic(struct life *L, struct slot *sl, int udp[2])
{
	struct sockaddr_storage ss;
	socklen_t al = loop_addr(sl->c.family, UDP_POL + sl->idx, &ss);
	uint8_t buf[600];
	int i;

	for (i = 0; i < 3 && slot_healthy(sl); i++) {
		switch (rnd(&L->r, 4)) {
		case 0:
			op_send(&L->r, sl, sl->fds[0], MAIN_TAG, ++sl->tx_seq);
			break;
		case 1:
			op_recv(&L->r, sl, sl->fds[0]);
			break;
		case 2:
			esp_payload(buf, sizeof(buf), TRAFFIC_SESS, i);
			sendto(udp[fam_idx(sl->c.family)], buf, sizeof(buf),
			       MSG_DONTWAIT, (void *)&ss, al);
			break;
		default:
			op_raw(&L->r, sl);
		}
	}
	raw_drain(sl);
}

/* Tear a connection down in one of the ways a daemon or a crash would. */
static void life_close(struct life *L, struct slot *sl)
{
	switch (rnd(&L->r, 5)) {
	case 0:
		trace("slot %d: ULP closes first", sl->idx);
		close(sl->fds[0]);
		sl->nfds = 0;
		break;
	case 1:
		trace("slot %d: peer resets", sl->idx);
		close_rst(sl->c.raw);
		sl->c.raw = -1;
		break;
	case 2:
		trace("slot %d: shutdown", sl->idx);
		shutdown(sl->fds[0], SHUT_RDWR);
		break;
	case 3:
		trace("slot %d: ULP resets", sl->idx);
		close_rst(sl->fds[0]);
		sl->nfds = 0;
		break;
	default:
		break;
	}
	if (rnd(&L->r, 2) && sl->out_on) {
		sa_del(L->nl, &sl->out);
		sa_del(L->nl, &sl->in);
		sl->out_on = false;
		sl->in_on = false;
	}
	slot_close(sl);
	sl->fds[0] = -1;
}

static void life_setup(struct life *L, int udp[2], unsigned long long b, bool pols)
{
	int i, err;

	new_netns();
	L->nl = nl_open();
	listeners();
	L->r.s = mix(sh->seed, b);
	L->n = rrange(&L->r, pols ? 1 : 2, ARRAY_SIZE(L->sl));
	udp[0] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	udp[1] = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	calls_udp[0] = udp_sink(AF_INET, UDP_SINK);
	calls_udp[1] = udp_sink(AF_INET6, UDP_SINK);
	calls_nl = L->nl;
	cur_slots = L->sl;
	cur_nslots = L->n;
	for (i = 0; i < L->n; i++) {
		struct slot *sl = &L->sl[i];

		sl->idx = i;
		sl->c.raw = -1;
		sl->tx_ok = calloc(TX_SEQS, 1);
		CHECK(sl->tx_ok, "out of memory");
		sl->out.reqid = i + 1;
		sl->in.reqid = 100 + i;
		sl->out.encap = TCP_ENCAP_ESPINTCP;
		sl->in.encap = TCP_ENCAP_ESPINTCP;
		sl->out.spi = 0x50000000 + b * 64 + i;
		sl->in.spi = 0x60000000 + b * 64 + i;
		note_out_spi(sl->out.spi);
		/*
		 * Outbound bundles cached per CPU keep deleted SAs (and their
		 * type module) referenced for a while: none in an rmmod batch.
		 */
		if (!pols)
			continue;
		err = pol_add(L->nl, AF_INET, UDP_POL + i, i + 1);
		CHECK(!err, "policy: %s", strerror(-err));
		err = pol_add(L->nl, AF_INET6, UDP_POL + i, i + 1);
		CHECK(!err, "policy: %s", strerror(-err));
	}
}

/*
 * One batch of @conns connections, in a child process with its own network
 * namespace. @ctl: for an rmmod batch, the pipes to the parent.
 */
static void life_batch(unsigned long long b, int conns, int ready_fd, int go_fd)
{
	struct life *L = calloc(1, sizeof(*L));
	int udp[2], i, c;
	char ch;

	CHECK(L, "out of memory");
	sh->trace_len = 0;
	life_setup(L, udp, b, ready_fd < 0);
	trace("batch %llu pool %d conns %d rmmod %d", b, L->n, conns,
	      ready_fd >= 0);

	if (ready_fd >= 0) {
		/* Live sockets of both families, each with SAs. */
		for (i = 0; i < L->n; i++)
			life_open(L, &L->sl[i], true, i % 2 ? AF_INET6 : AF_INET);
		for (i = 0; i < L->n; i++)
			life_traffic(L, &L->sl[i], udp);
		CHECK(write(ready_fd, "R", 1) == 1, "pipe");
		CHECK(read(go_fd, &ch, 1) == 1, "pipe");
		for (i = 0; i < L->n; i++) {
			if (L->sl[i].out_on) {
				sa_del(L->nl, &L->sl[i].out);
				sa_del(L->nl, &L->sl[i].in);
				L->sl[i].out_on = false;
				L->sl[i].in_on = false;
			}
		}
		/* Queued decapsulated datagrams hold their SA (secpath). */
		drain_all();
		close(calls_udp[0]);
		close(calls_udp[1]);
		calls_udp[0] = -1;
		calls_udp[1] = -1;
		/* Nothing may autoload a stock ESP type from here on. */
		CHECK(write(ready_fd, "D", 1) == 1, "pipe");
		CHECK(read(go_fd, &ch, 1) == 1, "pipe");
		if (ch == 'C')
			for (i = 0; i < L->n; i++)
				if (L->sl[i].open)
					life_close(L, &L->sl[i]);
		_exit(0);
	}

	for (c = 0; c < conns && !out_of_time(); c++) {
		struct slot *sl = &L->sl[rnd(&L->r, L->n)];

		if (sl->open)
			life_close(L, sl);
		life_open(L, sl, chance(&L->r, 700), 0);
		for (i = 0; i < L->n; i++)
			if (L->sl[i].open)
				life_traffic(L, &L->sl[i], udp);
		drain_all();
		sh->conns++;
	}
	/* The end: clean, or the namespace goes with everything in it. */
	if (rnd(&L->r, 2)) {
		trace("batch %llu: clean teardown", b);
		for (i = 0; i < L->n; i++)
			if (L->sl[i].open)
				life_close(L, &L->sl[i]);
	} else {
		trace("batch %llu: namespace deleted with live sockets", b);
	}
	_exit(0);
}

static void mustfail_rmmod(const char *m, const char *why)
{
	if (!rmmod(m)) {
		bool ok = reload_modules();

		fail("rmmod %s succeeded %s%s", m, why,
		     ok ? "" : " (and it could not be loaded again)");
	}
	CHECK(errno == EWOULDBLOCK || errno == EBUSY || errno == EAGAIN,
	      "rmmod %s %s: %s", m, why, strerror(errno));
}

/* Poll for rmmod to succeed once nothing uses the module. */
static void rmmod_when_idle(const char *m, const char *why)
{
	unsigned long long end = now_ns() + 3 * WAIT_MS * 1000000ULL;

	while (rmmod(m)) {
		if (now_ns() > end) {
			int ref = mod_refcnt(m);

			reload_modules();
			fail("rmmod %s still refused %d ms %s (refcnt %d)", m,
			     3 * WAIT_MS, why, ref);
		}
		usleep(20000);
	}
	trace("rmmod %s ok %s", m, why);
}

static int wait_child(pid_t pid, int seconds)
{
	unsigned long long end = now_ns() + seconds * 1000000000ULL;
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(5000);
	}
	return status;
}

/* No SA anywhere (namespaces of earlier batches die late): the types are idle. */
static bool types_idle(int ms)
{
	unsigned long long end = now_ns() + ms * 1000000ULL;

	while (mod_refcnt("esp4") || mod_refcnt("esp6")) {
		if (now_ns() > end)
			return false;
		usleep(50000);
	}
	return true;
}

static bool life_rmmod_round(unsigned long long b)
{
	int ready[2], go[2], st;
	char ch;
	pid_t pid;

	if (!types_idle(3 * WAIT_MS)) {
		trace("batch %llu: SAs of earlier namespaces still there, no rmmod round",
		      b);
		return false;
	}

	CHECK(!pipe(ready) && !pipe(go), "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		close(ready[0]);
		close(go[1]);
		life_batch(b, 0, ready[1], go[0]);
	}
	close(ready[1]);
	close(go[0]);
	if (read(ready[0], &ch, 1) != 1) {
		waitpid(pid, &st, 0);
		fail("rmmod batch failed before it was ready: %s", sh->why);
	}
	trace("rmmod with live sockets and SAs");
	mustfail_rmmod("esp4", "with live IPv4 SAs");
	mustfail_rmmod("esp6", "with live IPv6 SAs");
	mustfail_rmmod("espintcp", "with live sockets and SAs");
	CHECK(write(go[1], "S", 1) == 1, "pipe");
	CHECK(read(ready[0], &ch, 1) == 1 && ch == 'D', "rmmod batch: %s", sh->why);
	/* SAs go away asynchronously; then the types may leave. */
	rmmod_when_idle("esp4", "after the SAs were deleted");
	rmmod_when_idle("esp6", "after the SAs were deleted");
	mustfail_rmmod("espintcp", "with live sockets");
	ch = rnd(&(struct rng){ mix(sh->seed, b) }, 2) ? 'C' : 'X';
	CHECK(write(go[1], &ch, 1) == 1, "pipe");
	st = wait_child(pid, WAIT_MS / 1000 + 30);
	close(ready[0]);
	close(go[1]);
	if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		reload_modules();
		fail("rmmod batch %s: %s", st < 0 ? "hung" : "failed", sh->why);
	}
	rmmod_when_idle("espintcp", ch == 'C' ? "after the sockets were closed" :
			"after their namespace was deleted");
	CHECK(reload_modules(), "cannot load our modules again");
	return true;
}

static void mode_lifetime(unsigned long long conns, int64_t only)
{
	unsigned long long b, per;
	bool can_rmmod = rmmod_possible();
	int rounds = 0, holders = espintcp_holders(), ref;
	unsigned long long end;

	if (!can_rmmod)
		printf("# lifetime: rmmod part skipped (modules not loaded from %s)\n",
		       ko_dir ? ko_dir : "a known directory");
	for (b = only >= 0 ? only : 0; sh->conns < conns && !out_of_time(); b++) {
		struct rng r = { mix(sh->seed, b) };
		int st;
		pid_t pid;

		sh->unit = b;
		sh->unit_seed = r.s;
		if (can_rmmod && b % 8 == 1) {
			rounds += life_rmmod_round(b);
			if (only >= 0)
				break;
			continue;
		}
		per = rrange(&r, 20, 200);
		if (per > conns - sh->conns)
			per = conns - sh->conns;
		pid = fork();
		CHECK(pid >= 0, "fork: %s", strerror(errno));
		if (!pid)
			life_batch(b, per, -1, -1);
		if (chance(&r, 150)) {
			/* Killed mid-batch: its namespace dies with it. */
			unsigned long long at = now_ns() + rrange(&r, 1, 2000) * 1000000ULL;

			while (now_ns() < at && waitpid(pid, &st, WNOHANG) == 0)
				usleep(5000);
			kill(pid, SIGKILL);
			trace("batch %llu killed", b);
			waitpid(pid, &st, 0);
		} else {
			st = wait_child(pid, WAIT_MS / 1000 * 5 + 60);
			CHECK(st >= 0, "batch %llu hung", b);
			CHECK(WIFEXITED(st) && !WEXITSTATUS(st), "batch %llu: %s",
			      b, sh->why);
		}
		if (only >= 0)
			break;
	}
	/* Every socket is freed at last: no context or socket leaks. */
	end = now_ns() + 6 * WAIT_MS * 1000000ULL;
	while ((ref = mod_refcnt("espintcp")) > holders && now_ns() < end)
		usleep(50000);
	CHECK(ref <= holders, "%d espintcp sockets still held %d ms after the end",
	      ref - holders, 6 * WAIT_MS);
	if (can_rmmod)
		printf("# lifetime: %d rmmod rounds\n", rounds);
	_exit(0);
}

/* ------------------------------------------------------------------ */

static const char *out_dir(void)
{
	const char *d = getenv("ESPINTCP_FUZZ_OUT");

	return d && *d ? d : "/tmp";
}

static void save_failure(const char *mode, const char *argv0)
{
	char path[4096], dir[2048];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s", out_dir());
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/espintcp-fuzz-%s-%llu-%llu.trace",
		 dir, mode, sh->seed, sh->unit);
	f = fopen(path, "w");
	if (!f) {
		printf("# cannot save %s: %s\n", path, strerror(errno));
		return;
	}
	fprintf(f, "mode %s seed %llu unit %llu unit seed %#llx\n",
		mode, sh->seed, sh->unit, sh->unit_seed);
	fprintf(f, "failure: %s\n", sh->why);
	fprintf(f, "reproduce: %s %s --seed %llu --session %llu\n",
		argv0, mode, sh->seed, sh->unit);
	fprintf(f, "--- trace of the unit ---\n");
	fwrite(sh->trace, 1, sh->trace_len, f);
	fclose(f);
	printf("# saved: %s\n", path);
	if (!strcmp(mode, "stream") && sh->stream_len) {
		snprintf(path, sizeof(path),
			 "%s/espintcp-fuzz-%s-%llu-%llu.stream", dir,
			 mode, sh->seed, sh->unit);
		f = fopen(path, "w");
		if (f) {
			fwrite(sh->stream, 1, sh->stream_len, f);
			fclose(f);
			printf("# saved: %s (the %zu bytes the peer wrote after IKETCP)\n",
			       path, sh->stream_len);
		}
	}
}

/*
 * The first SA of an algorithm loads crypto modules and runs their self-tests,
 * which takes tens of seconds under TCG: do it before any time bound runs.
 */
static void warm_up(void)
{
	pid_t pid = fork();

	if (!pid) {
		struct sa x = { .family = AF_INET, .spi = 0x7f000001 };
		int nl;

		new_netns();
		nl = nl_open();
		addr_of(AF_INET, &x.src);
		addr_of(AF_INET, &x.dst);
		for (x.alg = ALG_NULL; x.alg <= ALG_GCM; x.alg++) {
			sa_put(nl, &x, XFRM_MSG_NEWSA);
			sa_del(nl, &x);
			x.family = AF_INET6;
			addr_of(AF_INET6, &x.src);
			addr_of(AF_INET6, &x.dst);
			sa_put(nl, &x, XFRM_MSG_NEWSA);
			sa_del(nl, &x);
		}
		_exit(0);
	}
	if (pid > 0)
		wait_child(pid, 600);
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"%s [stream|calls|lifetime|all] [--seed S] [--frames N]\n"
		"  [--calls N] [--conns N] [--seconds S] [--session K]\n"
		"  [--ko-dir DIR] [--replay FILE (stream: these bytes)]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long long seed, frames = 20000, ncalls = 2000, conns = 200;
	const char *which = "all";
	double seconds = 60;
	int64_t session = -1;
	static const char * const names[] = { "stream", "calls", "lifetime" };
	static const double share[] = { 0.45, 0.4, 0.15 };
	bool run[3] = { false };
	int i, n = 0, num = 0, failed = 0;
	bool seeded = false;

	seed = (unsigned long long)time(NULL) * 1000003ULL ^ getpid();
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--seed") && v) {
			seed = strtoull(v, NULL, 0);
			seeded = true;
			i++;
		} else if (!strcmp(a, "--frames") && v) {
			frames = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--calls") && v) {
			ncalls = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--conns") && v) {
			conns = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--seconds") && v) {
			seconds = atof(v);
			i++;
		} else if (!strcmp(a, "--session") && v) {
			session = strtoll(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--replay") && v) {
			FILE *f = fopen(v, "r");

			replay_buf = malloc(GEN_MAX);
			if (!f || !replay_buf) {
				perror(v);
				return 2;
			}
			replay_len = fread(replay_buf, 1, GEN_MAX, f);
			fclose(f);
			if (session < 0)
				session = 0;
			i++;
		} else if (!strcmp(a, "--ko-dir") && v) {
			ko_dir = v;
			i++;
		} else if (a[0] != '-') {
			which = a;
		} else {
			usage(argv[0]);
		}
	}
	for (i = 0; i < 3; i++) {
		run[i] = !strcmp(which, "all") || !strcmp(which, names[i]);
		n += run[i];
	}
	if (!n)
		usage(argv[0]);

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	printf("# seed %llu%s\n", seed, seeded ? "" : " (fresh)");
	printf("TAP version 13\n");
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}

	warm_up();
	for (i = 0; i < 3; i++) {
		double secs = n > 1 ? seconds * share[i] : seconds;
		unsigned long long t0 = now_ns();
		int status, bound;
		pid_t pid;

		if (!run[i])
			continue;
		num++;
		memset(sh, 0, offsetof(struct shared, trace));
		sh->trace_len = 0;
		sh->stream_len = 0;
		snprintf(sh->mode, sizeof(sh->mode), "%s", names[i]);
		sh->seed = seed;
		deadline_ns = t0 + secs * 1e9;
		mode_start_ns = t0;
		fflush(stdout);
		pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (!pid) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (i == 0)
				mode_stream(frames, session);
			else if (i == 1)
				mode_calls(ncalls, session);
			else
				mode_lifetime(conns, session);
		}
		/* Past its time, a drain bound and slack for TCG, it hangs. */
		bound = secs + 8 * WAIT_MS / 1000 + 120;
		status = wait_child(pid, bound);
		if (status < 0)
			snprintf(sh->why, sizeof(sh->why),
				 "hung: still running %d s after its start", bound);
		printf("# %s: %.1f s, frames %llu, call sequences %llu, ",
		       names[i], (now_ns() - t0) / 1e9, sh->frames, sh->calls);
		printf("connections %llu\n", sh->conns);
		if (i == 0) {
			printf("# stream: Lengths covered %llu of 65536, ",
			       sh->lengths_seen);
			printf("IKE delivered %llu, ESP sent %llu delivered %llu\n",
			       sh->ike_delivered, sh->esp_sent, sh->esp_delivered);
		}
		if (i == 1)
			printf("# calls: IKE sent %llu seen %llu, ESP out %llu in %llu\n",
			       sh->ike_sent, sh->ike_delivered, sh->esp_out_seen,
			       sh->esp_in_seen);
		if (getenv("ESPINTCP_FUZZ_DUMP"))
			fwrite(sh->trace, 1, sh->trace_len, stderr);
		if (status >= 0 && WIFEXITED(status) && !WEXITSTATUS(status)) {
			printf("ok %d %s seed=%llu\n", num, names[i], seed);
		} else {
			failed++;
			if (status >= 0 && !sh->failed)
				snprintf(sh->why, sizeof(sh->why),
					 "exited with status %#x", status);
			printf("# FAILED %s seed %llu unit %llu: %s\n",
			       names[i], seed, sh->unit, sh->why);
			save_failure(names[i], argv[0]);
			printf("not ok %d %s seed=%llu\n", num, names[i], seed);
		}
	}
	/* Never leave our modules unloaded. */
	if (ko_dir && !reload_modules()) {
		printf("not ok %d our modules are loaded at the end\n", ++num);
		failed++;
	}
	printf("1..%d\n", num);
	return failed ? 1 : 0;
}
