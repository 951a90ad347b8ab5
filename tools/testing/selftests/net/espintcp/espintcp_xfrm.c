// SPDX-License-Identifier: GPL-2.0
/*
 * Selftests of the ESP xfrm types (esp4, esp6) with TCP encapsulation
 * (RFC 9329), and of plain and UDP-encapsulated ESP through the same types.
 *
 * Two hosts: A is the test's own network namespace, B a named one, joined by
 * a veth pair. SAs and policies are installed with `ip xfrm`, as an IKE
 * daemon would: for TCP, A (the TCP Originator) connects to B on port 4500,
 * sends "IKETCP", both ends attach the espintcp ULP, and the SAs' encap
 * ports are the connection's ports. The sockets carrying IKE bypass the
 * policies, like libreswan's.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/sendfile.h>
#include <sys/utsname.h>
#include <time.h>

#include "kselftest_harness.h"
#include "espintcp_lib.h"

#ifndef UDP_ENCAP
#define UDP_ENCAP 100
#endif
#ifndef SIOCINQ
#define SIOCINQ FIONREAD
#endif

#define IKE_PORT	4500
#define BULK_PORT	5001
#define TS_PORT		5003
#define SPI_AB		0x1000	/* A -> B */
#define SPI_BA		0x2000	/* B -> A */

enum encap { ENC_NONE, ENC_UDP, ENC_TCP };

/* Keys are fixed; what matters here is the transform, not secrecy. */
static const char alg_gcm[] =
	"aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128";

struct env {
	int family;		/* outer */
	int ifamily;		/* inner: the same, or IPv4 in IPv6 */
	bool tunnel;
	enum encap encap;
	const char *algs;
	bool esn;
	char ns[64];		/* host B */
	int ns_fd, self_fd;
	const char *a, *b;	/* outer addresses */
	const char *ai, *bi;	/* inner addresses */
	int lsn;		/* B's IKE listener (TCP) */
	int a_sk, b_sk;		/* espintcp or UDP encapsulation sockets */
	unsigned short a_port, b_port;
};

static const char * const topo_cmds[] = {
	/*
	 * Per-socket policies (xfrm_bypass()) are compiled by a key manager:
	 * opening an XFRM netlink socket loads xfrm_user if needed.
	 */
	"ip xfrm state flush",
	"ip link set lo up",
	"ip netns add %1$s",
	"ip link add veth0 address 02:00:00:00:72:01 type veth peer name veth1 address 02:00:00:00:72:02 netns %1$s",
	"ip addr add 10.72.0.1/24 dev veth0",
	"ip addr add fd00:72::1/64 dev veth0 nodad",
	"ip addr add 10.72.1.1/32 dev lo",
	"ip addr add fd00:72:1::1/128 dev lo",
	"ip link set veth0 up",
	"ip -n %1$s link set lo up",
	"ip -n %1$s addr add 10.72.0.2/24 dev veth1",
	"ip -n %1$s addr add fd00:72::2/64 dev veth1 nodad",
	"ip -n %1$s addr add 10.72.2.1/32 dev lo",
	"ip -n %1$s addr add fd00:72:2::1/128 dev lo",
	"ip -n %1$s link set veth1 up",
	/* No ARP or ND: neither must depend on the policies. */
	"ip neigh replace 10.72.0.2 lladdr 02:00:00:00:72:02 dev veth0 nud permanent",
	"ip neigh replace fd00:72::2 lladdr 02:00:00:00:72:02 dev veth0 nud permanent",
	"ip -n %1$s neigh replace 10.72.0.1 lladdr 02:00:00:00:72:01 dev veth1 nud permanent",
	"ip -n %1$s neigh replace fd00:72::1 lladdr 02:00:00:00:72:01 dev veth1 nud permanent",
	/* Tunnel mode: the inner addresses are reachable over veth. */
	"ip route add 10.72.2.1/32 dev veth0 src 10.72.1.1",
	"ip route add fd00:72:2::1/128 dev veth0 src fd00:72:1::1",
	"ip -n %1$s route add 10.72.1.1/32 dev veth1 src 10.72.2.1",
	"ip -n %1$s route add fd00:72:1::1/128 dev veth1 src fd00:72:2::1",
};

static int runf(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return run(cmd);
}

/* Run fn in host B's namespace. */
static int in_b(struct env *e)
{
	return setns(e->ns_fd, CLONE_NEWNET);
}

static int in_a(struct env *e)
{
	return setns(e->self_fd, CLONE_NEWNET);
}

static int b_socket_family(struct env *e, int family, int type)
{
	int fd;

	if (in_b(e))
		return -1;
	fd = socket(family, type, 0);
	if (in_a(e)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int b_socket(struct env *e, int type)
{
	return b_socket_family(e, e->family, type);
}

static uint64_t b_xfrm_counter(struct env *e, const char *name)
{
	uint64_t v;

	if (in_b(e))
		return 0;
	v = read_xfrm_counter(name);
	in_a(e);
	return v;
}

static socklen_t mkaddr(int family, const char *addr, unsigned short port,
			struct sockaddr_storage *ss)
{
	struct sockaddr_in *a4 = (void *)ss;
	struct sockaddr_in6 *a6 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		inet_pton(AF_INET, addr, &a4->sin_addr);
		return sizeof(*a4);
	}
	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(port);
	inet_pton(AF_INET6, addr, &a6->sin6_addr);
	return sizeof(*a6);
}

static unsigned short local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (void *)&ss, &len))
		return 0;
	return ntohs(ss.ss_family == AF_INET ?
		     ((struct sockaddr_in *)&ss)->sin_port :
		     ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A connects to B's IKE port, sends the prefix; both attach the ULP. */
static int tcp_connect(struct env *e)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->family, e->b, IKE_PORT, &ss);
	char prefix[6];
	int a, b;

	a = socket(e->family, SOCK_STREAM, 0);
	if (a < 0 || xfrm_bypass(a, e->family) || connect(a, (void *)&ss, len))
		goto fail_a;
	b = accept(e->lsn, NULL, NULL);
	if (b < 0)
		goto fail_a;
	if (xfrm_bypass(b, e->family) || write_all(a, "IKETCP", 6) ||
	    read_all(b, prefix, 6) || memcmp(prefix, "IKETCP", 6) ||
	    attach(a) || attach(b))
		goto fail_b;
	e->a_sk = a;
	e->b_sk = b;
	e->a_port = local_port(a);
	e->b_port = local_port(b);
	return 0;
fail_b:
	close(b);
fail_a:
	if (a >= 0)
		close(a);
	return -1;
}

static int tcp_listen(struct env *e)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->family, e->b, IKE_PORT, &ss);
	int one = 1;

	e->lsn = b_socket(e, SOCK_STREAM);
	if (e->lsn < 0 || xfrm_bypass(e->lsn, e->family) ||
	    setsockopt(e->lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(e->lsn, (void *)&ss, len) || listen(e->lsn, 8))
		return -1;
	return 0;
}

/* RFC 3948: the IKE daemon's UDP 4500 socket with ESP-in-UDP decoding. */
static int udp_encap_socket(struct env *e, int fd, const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->family, addr, IKE_PORT, &ss);
	int type = UDP_ENCAP_ESPINUDP;

	if (fd < 0 || xfrm_bypass(fd, e->family) || bind(fd, (void *)&ss, len) ||
	    setsockopt(fd, IPPROTO_UDP, UDP_ENCAP, &type, sizeof(type)))
		return -1;
	return 0;
}

static void encap_spec(struct env *e, bool ab, char *buf, size_t size)
{
	const char *oa = e->family == AF_INET ? "0.0.0.0" : "::";

	switch (e->encap) {
	case ENC_TCP:
		snprintf(buf, size, "encap espintcp %u %u %s",
			 ab ? e->a_port : e->b_port,
			 ab ? e->b_port : e->a_port, oa);
		break;
	case ENC_UDP:
		snprintf(buf, size, "encap espinudp %u %u %s", IKE_PORT,
			 IKE_PORT, oa);
		break;
	default:
		buf[0] = 0;
	}
}

/* The same SA on both hosts ("add" or "update"); @ab: from A to B. */
static int sa(struct env *e, const char *verb, bool on_b, bool ab,
	      unsigned int spi, unsigned int reqid)
{
	char encap[96];

	encap_spec(e, ab, encap, sizeof(encap));
	/* ip xfrm gives the selector the SA's family unless told otherwise:
	 * IPv4 in IPv6 needs an IPv4 selector, as IKE daemons install.
	 */
	return runf("ip %s%s xfrm state %s src %s dst %s %s %#x reqid %u mode %s %s %s %s %s",
		    on_b ? "-n " : "", on_b ? e->ns : "", verb,
		    ab ? e->a : e->b, ab ? e->b : e->a, "proto esp spi", spi,
		    reqid, e->tunnel ? "tunnel" : "transport",
		    e->esn ? "flag esn replay-window 64" : "replay-window 64",
		    e->algs, encap, e->ifamily != e->family ?
		    "sel src 0.0.0.0/0 dst 0.0.0.0/0" : "");
}

static int sa_pair(struct env *e, const char *verb, unsigned int spi_ab,
		   unsigned int spi_ba, unsigned int reqid)
{
	return sa(e, verb, false, true, spi_ab, reqid) ||
	       sa(e, verb, false, false, spi_ba, reqid) ||
	       sa(e, verb, true, true, spi_ab, reqid) ||
	       sa(e, verb, true, false, spi_ba, reqid);
}

static int sa_del(struct env *e, bool on_b, bool ab, unsigned int spi)
{
	return runf("ip %s%s xfrm state delete src %s dst %s proto esp spi %#x",
		    on_b ? "-n " : "", on_b ? e->ns : "",
		    ab ? e->a : e->b, ab ? e->b : e->a, spi);
}

static int sa_pair_del(struct env *e, unsigned int spi_ab, unsigned int spi_ba)
{
	return sa_del(e, false, true, spi_ab) ||
	       sa_del(e, false, false, spi_ba) ||
	       sa_del(e, true, true, spi_ab) ||
	       sa_del(e, true, false, spi_ba);
}

/* One policy: traffic from @src to @dst through the SA from @so to @do. */
static int add_policy(struct env *e, bool on_b, const char *dir,
		      const char *src, const char *dst, const char *so,
		      const char *dsto, const char *proto, unsigned int reqid)
{
	int plen = e->ifamily == AF_INET ? 32 : 128;
	char tmpl[256];

	snprintf(tmpl, sizeof(tmpl), "src %s dst %s proto esp reqid %u mode %s",
		 so, dsto, reqid, e->tunnel ? "tunnel" : "transport");
	return runf("ip %s%s xfrm policy add src %s/%d dst %s/%d %s dir %s tmpl %s",
		    on_b ? "-n " : "", on_b ? e->ns : "", src, plen, dst, plen,
		    proto, dir, tmpl);
}

/* Policies on both hosts; @proto "" for all traffic between them. */
static int policies(struct env *e, const char *proto, unsigned int reqid)
{
	return add_policy(e, false, "out", e->ai, e->bi, e->a, e->b, proto,
			  reqid) ||
	       add_policy(e, false, "in", e->bi, e->ai, e->b, e->a, proto,
			  reqid) ||
	       add_policy(e, true, "out", e->bi, e->ai, e->b, e->a, proto,
			  reqid) ||
	       add_policy(e, true, "in", e->ai, e->bi, e->a, e->b, proto,
			  reqid);
}

/* Packets an SA has processed, from `ip -s xfrm state`. */
static long sa_packets(struct env *e, bool on_b, bool ab, unsigned int spi)
{
	char cmd[512], line[256];
	long pkts = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "ip %s%s -s xfrm state get src %s dst %s proto esp spi %#x",
		 on_b ? "-n " : "", on_b ? e->ns : "",
		 ab ? e->a : e->b, ab ? e->b : e->a, spi);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		long bytes, p;

		if (sscanf(line, " %ld(bytes), %ld(packets)", &bytes, &p) == 2 &&
		    pkts < 0)
			pkts = p;
	}
	pclose(f);
	return pkts;
}

static int env_setup(struct env *e, int family, bool tunnel, enum encap encap,
		     const char *algs, bool esn)
{
	char path[128], cmd[256];
	size_t i;

	memset(e, 0, sizeof(*e));
	e->family = family;
	e->ifamily = family;
	e->tunnel = tunnel;
	e->encap = encap;
	e->algs = algs;
	e->esn = esn;
	e->lsn = -1;
	e->a_sk = -1;
	e->b_sk = -1;
	e->ns_fd = -1;
	e->a = family == AF_INET ? "10.72.0.1" : "fd00:72::1";
	e->b = family == AF_INET ? "10.72.0.2" : "fd00:72::2";
	if (tunnel) {
		e->ai = family == AF_INET ? "10.72.1.1" : "fd00:72:1::1";
		e->bi = family == AF_INET ? "10.72.2.1" : "fd00:72:2::1";
	} else {
		e->ai = e->a;
		e->bi = e->b;
	}
	snprintf(e->ns, sizeof(e->ns), "espintcp-b-%d", getpid());

	if (unshare(CLONE_NEWNET))
		return -1;
	e->self_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	for (i = 0; i < ARRAY_SIZE(topo_cmds); i++) {
		snprintf(cmd, sizeof(cmd), topo_cmds[i], e->ns);
		if (run(cmd)) {
			fprintf(stderr, "# failed: %s\n", cmd);
			return -1;
		}
	}
	snprintf(path, sizeof(path), "/run/netns/%s", e->ns);
	e->ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (e->self_fd < 0 || e->ns_fd < 0)
		return -1;

	switch (encap) {
	case ENC_TCP:
		if (tcp_listen(e) || tcp_connect(e)) {
			fprintf(stderr, "# IKE connection: %s\n", strerror(errno));
			return -1;
		}
		break;
	case ENC_UDP:
		e->a_sk = socket(family, SOCK_DGRAM, 0);
		e->b_sk = b_socket(e, SOCK_DGRAM);
		if (udp_encap_socket(e, e->a_sk, e->a) ||
		    udp_encap_socket(e, e->b_sk, e->b)) {
			fprintf(stderr, "# IKE sockets: %s\n", strerror(errno));
			return -1;
		}
		break;
	default:
		break;
	}
	return 0;
}

static void env_teardown(struct env *e)
{
	if (e->a_sk >= 0)
		close(e->a_sk);
	if (e->b_sk >= 0)
		close(e->b_sk);
	if (e->lsn >= 0)
		close(e->lsn);
	if (e->ns_fd >= 0)
		close(e->ns_fd);
	/* Also after a setup that failed before opening it. */
	if (e->ns[0])
		runf("ip netns del %s 2>/dev/null", e->ns);
}

static int do_ping(struct env *e, int count)
{
	return runf("ping -q -i 0.2 -c %d -W 20 %s >/dev/null", count, e->bi);
}

/* A TCP connection from A's to B's inner address: the client and server. */
static int bulk_pair(struct env *e, int *client, int *server)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->ifamily, e->bi, BULK_PORT, &ss);
	int one = 1, lsn, c;

	lsn = b_socket_family(e, e->ifamily, SOCK_STREAM);
	if (lsn < 0 ||
	    setsockopt(lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lsn, (void *)&ss, len) || listen(lsn, 1))
		return -1;
	c = socket(e->ifamily, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (void *)&ss, len))
		return -1;
	*server = accept(lsn, NULL, NULL);
	close(lsn);
	*client = c;
	return *server < 0 ? -1 : 0;
}

/* Send @len pattern bytes from a child; returns its pid. */
static pid_t bulk_sender(int fd, size_t len, uint32_t seed)
{
	pid_t pid = fork();

	if (pid == 0) {
		uint8_t *buf = malloc(len);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!buf)
			_exit(1);
		fill(buf, len, seed);
		_exit(write_all(fd, buf, len) || shutdown(fd, SHUT_WR));
	}
	return pid;
}

static int bulk_check(int fd, size_t len, uint32_t seed)
{
	uint8_t *buf = malloc(len + 1);
	int ret;

	if (!buf)
		return -1;
	ret = read_all(fd, buf, len) || check_fill(buf, len, seed) ||
	      read(fd, buf, 1) != 0;
	free(buf);
	return ret ? -1 : 0;
}

static int wait_ok(pid_t pid)
{
	int status;

	return waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	       WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Content-checked transfer from A to B through the SAs. */
static int bulk(struct env *e, size_t len)
{
	int c, s, ret;
	pid_t pid;

	if (bulk_pair(e, &c, &s))
		return -1;
	pid = bulk_sender(c, len, 7);
	ret = bulk_check(s, len, 7);
	if (wait_ok(pid))
		ret = -1;
	close(c);
	close(s);
	return ret;
}

/* Datagrams from A to B's inner address until killed. */
static pid_t flood(struct env *e)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct sockaddr_storage ss;
		socklen_t len = mkaddr(e->ifamily, e->bi, 9, &ss);
		int fd = socket(e->ifamily, SOCK_DGRAM, 0);
		char buf[512] = { 0 };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			sendto(fd, buf, sizeof(buf), 0, (void *)&ss, len);
	}
	return pid;
}

static void stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int send_datagram(struct env *e)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->ifamily, e->bi, 9, &ss);
	int fd = socket(e->ifamily, SOCK_DGRAM, 0);
	char buf[64] = { 0 };
	ssize_t n;

	n = sendto(fd, buf, sizeof(buf), 0, (void *)&ss, len);
	close(fd);
	return n == sizeof(buf) ? 0 : -1;
}

/* Poll for a state, bounded: no timing assumption beyond WAIT_MS. */
#define WAIT_FOR(cond) ({						\
	struct timespec _t0, _t;					\
	bool _ok;							\
	clock_gettime(CLOCK_MONOTONIC, &_t0);				\
	for (;;) {							\
		_ok = (cond);						\
		clock_gettime(CLOCK_MONOTONIC, &_t);			\
		if (_ok || (_t.tv_sec - _t0.tv_sec) * 1000 +		\
			   (_t.tv_nsec - _t0.tv_nsec) / 1000000 > WAIT_MS)	\
			break;						\
		usleep(20000);						\
	}								\
	_ok;								\
})

/*
 * A packet socket on A's veth, as tcpdump opens one: decapsulated packets
 * are received again on the ingress device, and taps push back to their
 * MAC header, which must be sane.
 */
static int tap_open(void)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
		.sll_ifindex = if_nametoindex("veth0"),
	};
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));

	if (fd < 0 || bind(fd, (void *)&sll, sizeof(sll))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Ping, bulk transfer, every SA counted, no XFRM error anywhere. */
static void check_traffic(struct __test_metadata *_metadata, struct env *e,
			  unsigned int spi_ab, unsigned int spi_ba)
{
	int tap = tap_open();

	ASSERT_LE(0, tap);
	ASSERT_EQ(0, do_ping(e, 3));
	ASSERT_EQ(0, bulk(e, 256 * 1024));
	close(tap);
	EXPECT_LT(0, sa_packets(e, false, true, spi_ab));
	EXPECT_LT(0, sa_packets(e, true, true, spi_ab));
	EXPECT_LT(0, sa_packets(e, false, false, spi_ba));
	EXPECT_LT(0, sa_packets(e, true, false, spi_ba));
	EXPECT_EQ(0, read_xfrm_counter(NULL));
	EXPECT_EQ(0, b_xfrm_counter(e, NULL));
}

/* Topologies and encapsulations, one AEAD. */
FIXTURE(esp) {
	struct env e;
};

FIXTURE_VARIANT(esp) {
	int family;
	bool tunnel;
	enum encap encap;
};

FIXTURE_VARIANT_ADD(esp, tcp4_transport) { AF_INET, false, ENC_TCP };

FIXTURE_VARIANT_ADD(esp, tcp4_tunnel) { AF_INET, true, ENC_TCP };

FIXTURE_VARIANT_ADD(esp, tcp6_transport) { AF_INET6, false, ENC_TCP };

FIXTURE_VARIANT_ADD(esp, tcp6_tunnel) { AF_INET6, true, ENC_TCP };

FIXTURE_VARIANT_ADD(esp, udp4_transport) { AF_INET, false, ENC_UDP };

FIXTURE_VARIANT_ADD(esp, udp4_tunnel) { AF_INET, true, ENC_UDP };

FIXTURE_VARIANT_ADD(esp, udp6_transport) { AF_INET6, false, ENC_UDP };

FIXTURE_VARIANT_ADD(esp, udp6_tunnel) { AF_INET6, true, ENC_UDP };

FIXTURE_VARIANT_ADD(esp, plain4_transport) { AF_INET, false, ENC_NONE };

FIXTURE_VARIANT_ADD(esp, plain4_tunnel) { AF_INET, true, ENC_NONE };

FIXTURE_VARIANT_ADD(esp, plain6_transport) { AF_INET6, false, ENC_NONE };

FIXTURE_VARIANT_ADD(esp, plain6_tunnel) { AF_INET6, true, ENC_NONE };

FIXTURE_TEARDOWN(esp)
{
	env_teardown(&self->e);
}

FIXTURE_SETUP(esp)
{
	SETUP_OK(esp, env_setup(&self->e, variant->family, variant->tunnel,
				variant->encap, alg_gcm, false));
	SETUP_OK(esp, sa_pair(&self->e, "add", SPI_AB, SPI_BA, 1));
	SETUP_OK(esp, policies(&self->e, "", 1));
}

TEST_F_TIMEOUT(esp, traffic, 300)
{
	check_traffic(_metadata, &self->e, SPI_AB, SPI_BA);
}

/* Every algorithm family the stock ESP offers, over TCP. */
FIXTURE(alg) {
	struct env e;
};

FIXTURE_VARIANT(alg) {
	const char *algs;
	bool esn;
};

FIXTURE_VARIANT_ADD(alg, gcm) { alg_gcm, false };

FIXTURE_VARIANT_ADD(alg, gcm_esn) { alg_gcm, true };

FIXTURE_VARIANT_ADD(alg, chacha20poly1305) {
	"aead 'rfc7539esp(chacha20,poly1305)' 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223 128",
	false
};

FIXTURE_VARIANT_ADD(alg, ccm) {
	"aead 'rfc4309(ccm(aes))' 0x000102030405060708090a0b0c0d0e0f101112 128",
	false
};

FIXTURE_VARIANT_ADD(alg, gmac) {
	"aead 'rfc4543(gcm(aes))' 0x000102030405060708090a0b0c0d0e0f10111213 128",
	false
};

FIXTURE_VARIANT_ADD(alg, cbc_sha1) {
	"enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc 'hmac(sha1)' 0x000102030405060708090a0b0c0d0e0f10111213 96",
	false
};

FIXTURE_VARIANT_ADD(alg, cbc_sha256) {
	"enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc 'hmac(sha256)' 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 128",
	false
};

FIXTURE_VARIANT_ADD(alg, cbc_sha256_esn) {
	"enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc 'hmac(sha256)' 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 128",
	true
};

FIXTURE_VARIANT_ADD(alg, cbc_sha512) {
	"enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f auth-trunc 'hmac(sha512)' 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 256",
	false
};

FIXTURE_TEARDOWN(alg)
{
	env_teardown(&self->e);
}

FIXTURE_SETUP(alg)
{
	SETUP_OK(alg, env_setup(&self->e, AF_INET, false, ENC_TCP,
				variant->algs, variant->esn));
	SETUP_OK(alg, sa_pair(&self->e, "add", SPI_AB, SPI_BA, 1));
	SETUP_OK(alg, policies(&self->e, "", 1));
}

TEST_F_TIMEOUT(alg, traffic, 300)
{
	check_traffic(_metadata, &self->e, SPI_AB, SPI_BA);
}

/* The life of TCP-encapsulated SAs and their connection. */
FIXTURE(tcp) {
	struct env e;
};

FIXTURE_VARIANT(tcp) {
	int family;
};

FIXTURE_VARIANT_ADD(tcp, ipv4) { AF_INET };

FIXTURE_VARIANT_ADD(tcp, ipv6) { AF_INET6 };

FIXTURE_TEARDOWN(tcp)
{
	env_teardown(&self->e);
}

FIXTURE_SETUP(tcp)
{
	SETUP_OK(tcp, env_setup(&self->e, variant->family, false, ENC_TCP,
				alg_gcm, false));
	SETUP_OK(tcp, sa_pair(&self->e, "add", SPI_AB, SPI_BA, 1));
}

/* The IKE side of the connection still works: one message each way. */
static void check_ike(struct __test_metadata *_metadata, struct env *e)
{
	static const uint8_t msg[] = { 0, 0, 0, 0, 'i', 'k', 'e' };
	uint8_t buf[64];

	ASSERT_EQ(sizeof(msg), send(e->a_sk, msg, sizeof(msg), 0));
	ASSERT_EQ(sizeof(msg), recv_wait(e->b_sk, buf, sizeof(buf)));
	ASSERT_EQ(0, memcmp(buf, msg, sizeof(msg)));
	ASSERT_EQ(sizeof(msg), send(e->b_sk, msg, sizeof(msg), 0));
	ASSERT_EQ(sizeof(msg), recv_wait(e->a_sk, buf, sizeof(buf)));
}

TEST_F_TIMEOUT(tcp, sa_deleted_under_traffic, 300)
{
	struct env *e = &self->e;
	pid_t pid;

	ASSERT_EQ(0, policies(e, "", 1));
	pid = flood(e);
	ASSERT_LT(0, pid);
	ASSERT_TRUE(WAIT_FOR(sa_packets(e, true, true, SPI_AB) > 10));
	EXPECT_EQ(0, sa_pair_del(e, SPI_AB, SPI_BA));
	stop(pid);

	/* The connection survives, and new SAs on it carry traffic. */
	check_ike(_metadata, e);
	ASSERT_EQ(0, sa_pair(e, "add", SPI_AB + 1, SPI_BA + 1, 1));
	ASSERT_EQ(0, do_ping(e, 2));
	EXPECT_LT(0, sa_packets(e, true, true, SPI_AB + 1));
}

TEST_F_TIMEOUT(tcp, closed_while_sa_exists, 300)
{
	struct env *e = &self->e;
	uint64_t before;

	ASSERT_EQ(0, policies(e, "", 1));
	ASSERT_EQ(0, do_ping(e, 1));
	close(e->a_sk);
	close(e->b_sk);
	e->a_sk = -1;
	e->b_sk = -1;

	/* No socket: every packet is dropped and counted, nothing else. */
	before = read_xfrm_counter("XfrmOutError");
	ASSERT_TRUE(WAIT_FOR(send_datagram(e) == 0 &&
			     read_xfrm_counter("XfrmOutError") > before));
	EXPECT_EQ(0, sa_pair_del(e, SPI_AB, SPI_BA));
}

static int mapping_socket(struct env *e)
{
	struct sockaddr_nl snl = { .nl_family = AF_NETLINK };
	int group = XFRMNLGRP_MAPPING, fd;

	if (in_b(e))
		return -1;
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);
	if (in_a(e) || fd < 0 || bind(fd, (void *)&snl, sizeof(snl)) ||
	    setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group,
		       sizeof(group)))
		return -1;
	return fd;
}

/* The next XFRM_MSG_MAPPING on @fd, or -1. */
static int read_mapping(int fd, struct xfrm_user_mapping *um)
{
	char buf[4096];
	struct nlmsghdr *nh = (void *)buf;
	ssize_t n;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, WAIT_MS) != 1)
			return -1;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < (ssize_t)NLMSG_LENGTH(sizeof(*um)))
			return -1;
		if (nh->nlmsg_type == XFRM_MSG_MAPPING) {
			memcpy(um, NLMSG_DATA(nh), sizeof(*um));
			return 0;
		}
	}
}

/*
 * RFC 9329 6: only the Originator reconnects, from a new port; the
 * Responder accepts ESP for existing SAs on the new connection and its key
 * manager learns the new port (XFRM_MSG_MAPPING), then moves the SAs.
 */
TEST_F_TIMEOUT(tcp, reconnect_from_new_port, 300)
{
	struct env *e = &self->e;
	struct xfrm_user_mapping um;
	unsigned short old = e->a_port;
	uint64_t drops;
	int nl;

	ASSERT_EQ(0, policies(e, "", 1));
	ASSERT_EQ(0, do_ping(e, 1));
	nl = mapping_socket(e);
	ASSERT_LE(0, nl);

	close(e->a_sk);
	close(e->b_sk);
	ASSERT_EQ(0, tcp_connect(e));
	ASSERT_NE(old, e->a_port);

	/* A moves its SAs first; B hears from A on the new connection. */
	ASSERT_EQ(0, sa(e, "update", false, true, SPI_AB, 1));
	ASSERT_EQ(0, sa(e, "update", false, false, SPI_BA, 1));
	ASSERT_EQ(0, send_datagram(e));
	ASSERT_EQ(0, read_mapping(nl, &um));
	EXPECT_EQ(htonl(SPI_AB), um.id.spi);
	EXPECT_EQ(htons(old), um.old_sport);
	EXPECT_EQ(htons(e->a_port), um.new_sport);
	close(nl);

	/* Until B moves too, its replies go nowhere (and are counted). */
	ASSERT_EQ(0, sa(e, "update", true, true, SPI_AB, 1));
	ASSERT_EQ(0, sa(e, "update", true, false, SPI_BA, 1));
	drops = b_xfrm_counter(e, "XfrmOutError");
	ASSERT_EQ(0, do_ping(e, 2));
	ASSERT_EQ(0, bulk(e, 64 * 1024));
	EXPECT_EQ(drops, b_xfrm_counter(e, "XfrmOutError"));
	EXPECT_EQ(0, read_xfrm_counter("XfrmOutError"));
}

/* Two child SAs share one connection, each with its own traffic. */
TEST_F_TIMEOUT(tcp, two_child_sas, 300)
{
	struct env *e = &self->e;
	const char *icmp = e->ifamily == AF_INET ? "proto icmp" :
						   "proto ipv6-icmp";

	ASSERT_EQ(0, sa_pair(e, "add", SPI_AB + 2, SPI_BA + 2, 2));
	ASSERT_EQ(0, policies(e, icmp, 1));
	ASSERT_EQ(0, policies(e, "proto tcp", 2));
	ASSERT_EQ(0, do_ping(e, 2));
	ASSERT_EQ(0, bulk(e, 64 * 1024));
	EXPECT_EQ(2, sa_packets(e, false, true, SPI_AB));
	EXPECT_EQ(2, sa_packets(e, true, false, SPI_BA));
	EXPECT_LT(10, sa_packets(e, false, true, SPI_AB + 2));
	EXPECT_LT(10, sa_packets(e, true, false, SPI_BA + 2));
	EXPECT_EQ(0, read_xfrm_counter(NULL));
	EXPECT_EQ(0, b_xfrm_counter(e, NULL));
}

/* New SAs replace the old ones while a transfer runs; no byte is lost. */
TEST_F_TIMEOUT(tcp, rekey_under_traffic, 300)
{
	const size_t len = 1024 * 1024, head = 64 * 1024;
	struct env *e = &self->e;
	uint8_t *buf = malloc(len);
	int c, s;
	pid_t pid;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, policies(e, "", 1));
	ASSERT_EQ(0, bulk_pair(e, &c, &s));
	pid = bulk_sender(c, len, 11);
	ASSERT_LT(0, pid);
	ASSERT_EQ(0, read_all(s, buf, head));

	ASSERT_EQ(0, sa_pair(e, "add", SPI_AB + 3, SPI_BA + 3, 1));
	ASSERT_EQ(0, sa_pair_del(e, SPI_AB, SPI_BA));

	ASSERT_EQ(0, read_all(s, buf + head, len - head));
	ASSERT_EQ(0, check_fill(buf, len, 11));
	ASSERT_EQ(0, wait_ok(pid));
	EXPECT_LT(0, sa_packets(e, true, true, SPI_AB + 3));
	EXPECT_LT(0, sa_packets(e, false, false, SPI_BA + 3));
	free(buf);
	close(c);
	close(s);
}

/* Bytes that frame as ESP for B's inbound SA, with garbage ICVs. */
static void esp_lookalike(uint8_t *buf, size_t len)
{
	size_t off, i;
	uint32_t seq = 1;

	for (off = 0; off + 256 <= len; off += 256, seq++) {
		uint8_t *f = buf + off;

		f[0] = 1;			/* Length 256 */
		f[1] = 0;
		f[2] = SPI_AB >> 24;
		f[3] = (SPI_AB >> 16) & 0xff;
		f[4] = (SPI_AB >> 8) & 0xff;
		f[5] = SPI_AB & 0xff;
		f[6] = seq >> 24;
		f[7] = (seq >> 16) & 0xff;
		f[8] = (seq >> 8) & 0xff;
		f[9] = seq & 0xff;
		for (i = 10; i < 256; i++)
			f[i] = (uint8_t)(i * 13 + seq);
	}
}

static int inq(int fd)
{
	int n = -1;

	return ioctl(fd, SIOCINQ, &n) ? -1 : n;
}

/*
 * sendfile() puts page-cache pages into the receiver's queue as they are.
 * Whether they arrive before the ULP is attached or after, decrypting
 * them must not write into the file.
 */
TEST_F_TIMEOUT(tcp, sendfile_page_cache_untouched, 300)
{
	const size_t len = 64 * 1024;
	struct env *e = &self->e;
	char path[] = "/tmp/espintcp-pagecache-XXXXXX";
	uint8_t *want = malloc(len), *got = malloc(len), prefix[6];
	struct sockaddr_storage ss;
	socklen_t alen = mkaddr(e->family, e->b, IKE_PORT, &ss);
	uint64_t before;
	off_t off;
	int fd, a, b;

	ASSERT_NE(NULL, want);
	ASSERT_NE(NULL, got);
	esp_lookalike(want, len);
	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	unlink(path);
	ASSERT_EQ(0, write_all(fd, want, len));

	a = socket(e->family, SOCK_STREAM, 0);
	ASSERT_EQ(0, xfrm_bypass(a, e->family));
	ASSERT_EQ(0, connect(a, (void *)&ss, alen));
	b = accept(e->lsn, NULL, NULL);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, write_all(a, "IKETCP", 6));
	ASSERT_EQ(0, read_all(b, prefix, 6));

	before = b_xfrm_counter(e, "XfrmInStateProtoError");
	off = 0;
	ASSERT_EQ(len, sendfile(a, fd, &off, len));
	ASSERT_TRUE(WAIT_FOR(inq(b) == (int)len));
	ASSERT_EQ(0, attach(b));
	off = 0;
	ASSERT_EQ(len, sendfile(a, fd, &off, len));

	/* Every frame reached ESP and failed its integrity check. */
	ASSERT_TRUE(WAIT_FOR(b_xfrm_counter(e, "XfrmInStateProtoError") >=
			     before + 2 * len / 256));
	ASSERT_EQ(len, pread(fd, got, len, 0));
	ASSERT_EQ(0, memcmp(want, got, len));
	close(a);
	close(b);
	close(fd);
	free(want);
	free(got);
}

/* Packets a device of this namespace received (/sys shows another's). */
static long rx_packets(const char *dev)
{
	char line[512], name[64];
	long bytes, pkts, ret = -1;
	FILE *f = fopen("/proc/self/net/dev", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (!colon)
			continue;
		*colon = ' ';
		if (sscanf(line, " %63s %ld %ld", name, &bytes, &pkts) == 3 &&
		    !strcmp(name, dev))
			ret = pkts;
	}
	fclose(f);
	return ret;
}

/*
 * ESP from the stream gets a link-layer header of the device the segment
 * came in on. A GRE device without a remote address has header_ops whose
 * create() pushes its header and then fails, the destination being
 * unknown: here B's side of the connection reaches A through such a
 * device (A answers over the veth), so every ESP packet A receives is
 * built for it. IPv4 GRE carries IPv6 as well; bound to the veth, A's
 * device asks for little enough headroom that the header is tried.
 */
TEST_F_TIMEOUT(tcp, ingress_device_header_fails, 300)
{
	struct env *e = &self->e;
	long rx;

	ASSERT_EQ(0, runf("ip -n %s link add gre7 type gre local 10.72.2.1 remote 10.72.1.1 key 7",
			  e->ns));
	ASSERT_EQ(0, runf("ip -n %s link set gre7 up", e->ns));
	/* The tunnel's ends are the lo addresses, reached over the veth. */
	ASSERT_EQ(0, runf("ip -n %s route replace 10.72.1.1 via 10.72.0.1 dev veth1",
			  e->ns));
	ASSERT_EQ(0, runf("ip link add gre7 type gre key 7 dev veth0"));
	ASSERT_EQ(0, runf("ip link set gre7 up"));
	ASSERT_EQ(0, runf("ip -n %s route add %s dev gre7", e->ns, e->a));
	ASSERT_EQ(0, policies(e, "", 1));

	check_ike(_metadata, e);
	rx = rx_packets("gre7");
	ASSERT_LT(0, rx) TH_LOG("the connection does not come in over gre7");
	ASSERT_EQ(0, do_ping(e, 3));
	ASSERT_EQ(0, bulk(e, 64 * 1024));
	EXPECT_LT(rx, rx_packets("gre7"));
	EXPECT_LT(0, sa_packets(e, false, false, SPI_BA));
	EXPECT_EQ(0, read_xfrm_counter(NULL));
	EXPECT_EQ(0, b_xfrm_counter(e, NULL));
}

/* One datagram from @fd once poll() says it is readable: *@ready is the
 * time poll() returned, before recvmsg(), *@ts its SO_TIMESTAMPNS.
 */
static int recv_stamped(int fd, struct timespec *ready, struct timespec *ts)
{
	char cbuf[CMSG_SPACE(sizeof(*ts))], buf[64];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct cmsghdr *c;

	if (poll(&pfd, 1, WAIT_MS) != 1)
		return -1;
	clock_gettime(CLOCK_REALTIME, ready);
	if (recvmsg(fd, &m, 0) < 0)
		return -1;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level == SOL_SOCKET &&
		    c->cmsg_type == SCM_TIMESTAMPNS) {
			memcpy(ts, CMSG_DATA(c), sizeof(*ts));
			return 0;
		}
	}
	return -1;
}

static bool ts_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

/*
 * A decrypted packet carries the time its ESP message arrived, as over UDP,
 * where it is the received packet itself: the receiving socket's
 * SO_TIMESTAMPNS is no earlier than the send and no later than the moment
 * poll() said the packet was there, not the time it was read. (ping's round
 * trip is measured with it.)
 */
TEST_F_TIMEOUT(tcp, rx_timestamp_is_arrival, 300)
{
	struct env *e = &self->e;
	struct timespec sent, ready, ts;
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(e->family, e->bi, TS_PORT, &ss);
	int one = 1, rx, probe, tx;
	long before;

	ASSERT_EQ(0, policies(e, "proto udp", 1));
	rx = b_socket(e, SOCK_DGRAM);
	probe = b_socket(e, SOCK_DGRAM);
	tx = socket(e->family, SOCK_DGRAM, 0);
	ASSERT_LE(0, rx);
	ASSERT_LE(0, probe);
	ASSERT_LE(0, tx);
	ASSERT_EQ(0, setsockopt(rx, SOL_SOCKET, SO_TIMESTAMPNS, &one,
				sizeof(one)));
	ASSERT_EQ(0, bind(rx, (void *)&ss, len));

	/* The kernel starts stamping packets on arrival from a work item:
	 * until then they are stamped when read. Probe over B's loopback,
	 * outside the policies, until one is stamped on arrival.
	 */
	ASSERT_TRUE(WAIT_FOR(sendto(probe, "p", 1, 0, (void *)&ss, len) == 1 &&
			     !recv_stamped(rx, &ready, &ts) &&
			     ts_le(&ts, &ready)));

	before = sa_packets(e, true, true, SPI_AB);
	clock_gettime(CLOCK_REALTIME, &sent);
	ASSERT_EQ(1, sendto(tx, "x", 1, 0, (void *)&ss, len));
	ASSERT_EQ(0, recv_stamped(rx, &ready, &ts));
	EXPECT_EQ(before + 1, sa_packets(e, true, true, SPI_AB));
	EXPECT_TRUE(ts_le(&sent, &ts))
		TH_LOG("stamped %ld.%09ld, sent at %ld.%09ld",
		       (long)ts.tv_sec, ts.tv_nsec, (long)sent.tv_sec,
		       sent.tv_nsec);
	EXPECT_TRUE(ts_le(&ts, &ready))
		TH_LOG("stamped %ld.%09ld, readable since %ld.%09ld",
		       (long)ts.tv_sec, ts.tv_nsec, (long)ready.tv_sec,
		       ready.tv_nsec);
	close(tx);
	close(probe);
	close(rx);
}

/*
 * The core refuses hardware offload for a type without offload support,
 * for that reason; the same SA without offload is accepted.
 */
TEST_F(tcp, offload_refused)
{
	struct env *e = &self->e;
	char cmd[512], out[512] = "";
	size_t n = 0;
	FILE *f;
	int rc;

	snprintf(cmd, sizeof(cmd),
		 "ip xfrm state add src %s dst %s proto esp spi 0x3000 %s offload dev veth0 dir out 2>&1",
		 e->a, e->b, alg_gcm);
	f = popen(cmd, "r");
	ASSERT_NE(NULL, f);
	while (n < sizeof(out) - 1 && fgets(out + n, sizeof(out) - n, f))
		n = strlen(out);
	rc = pclose(f);
	ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc)) TH_LOG("%s", out);
	ASSERT_NE(NULL, strstr(out, "Type doesn't support offload"))
		TH_LOG("%s", out);
	ASSERT_NE(0, runf("ip xfrm state get src %s dst %s proto esp spi 0x3000 >/dev/null 2>&1",
			  e->a, e->b));

	ASSERT_EQ(0, runf("ip xfrm state add src %s dst %s proto esp spi 0x3000 %s",
			  e->a, e->b, alg_gcm));
	ASSERT_EQ(0, runf("ip xfrm state get src %s dst %s proto esp spi 0x3000 >/dev/null",
			  e->a, e->b));
	ASSERT_EQ(0, runf("ip xfrm state delete src %s dst %s proto esp spi 0x3000",
			  e->a, e->b));
}

/*
 * The draft NAT-T encapsulation (espinudp-nonike): kept where the kernel
 * still receives it (Debian's 6.1), refused where the kernel's own ESP types
 * refuse it (Linux 6.10 and later, so Debian's 6.12), exactly as stock.
 */
TEST_F(tcp, udp_non_ike_as_stock)
{
	struct env *e = &self->e;
	struct utsname u;
	int major = 0, minor = 0, n, rc;

	ASSERT_EQ(0, uname(&u));
	n = sscanf(u.release, "%d.%d", &major, &minor);
	ASSERT_EQ(2, n);
	rc = runf("ip xfrm state add src %s dst %s proto esp spi 0x3001 %s %s",
		  e->a, e->b, alg_gcm,
		  "encap espinudp-nonike 4500 4500 0.0.0.0 2>/dev/null");
	if (major < 6 || (major == 6 && minor < 10)) {
		EXPECT_EQ(0, rc);
	} else {
		EXPECT_NE(0, rc);
		EXPECT_NE(0, runf("ip xfrm state get src %s dst %s proto esp spi 0x3001 %s",
				  e->a, e->b, ">/dev/null 2>&1"));
	}
	runf("ip xfrm state delete src %s dst %s proto esp spi 0x3001 2>/dev/null",
	     e->a, e->b);
}

/*
 * Backpressure: local senders are throttled through an ESP-in-TCP SA the way
 * they are through ESP-in-UDP (their packets stay charged to them until they
 * are in the stream), so a bulk transfer over a slow outer path loses
 * nothing; forwarded traffic that overflows the ESP queue is counted as
 * congestion, never as an XFRM error. IKE keeps getting through meanwhile.
 */
#define BP_LEN		(64u << 20)	/* per transfer */
#define BP_CHUNK	(64u << 10)
#define BP_NETEM	"delay 10ms rate 20mbit"	/* on A's veth: A to B */
#define BP_SQUEEZE	"delay 10ms rate 2mbit"		/* while IKE is probed */
#define BP_BACKLOG	(64 << 10)	/* outer bytes queued before IKE goes */
#define BP_FWD_BACKLOG	(16 << 10)	/* the same with a 64K send buffer */

/* fill()'s pattern from byte @off of the stream on. */
static void fill_at(uint8_t *p, size_t len, uint32_t seed, size_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 31 + (off + i) * 7);
}

static int check_at(const uint8_t *p, size_t len, uint32_t seed, size_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed * 31 + (off + i) * 7))
			return -1;
	return 0;
}

/* Stream @len pattern bytes from a child, then shut down; returns its pid. */
static pid_t stream_sender(int fd, size_t len, uint32_t seed)
{
	pid_t pid = fork();

	if (pid == 0) {
		uint8_t *buf = malloc(BP_CHUNK);
		size_t off;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!buf)
			_exit(1);
		for (off = 0; off < len; off += BP_CHUNK) {
			size_t n = len - off < BP_CHUNK ? len - off : BP_CHUNK;

			fill_at(buf, n, seed, off);
			if (write_all(fd, buf, n))
				_exit(1);
		}
		_exit(shutdown(fd, SHUT_WR) ? 1 : 0);
	}
	return pid;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 +
	       (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static int outq(int fd)
{
	int n = -1;

	return ioctl(fd, SIOCOUTQ, &n) ? -1 : n;
}

struct bp_probe {
	long ike_ms;		/* IKE message A to B, -1: never sent */
	int backlog;		/* A's outer send queue when it was sent */
	size_t ike_off;		/* stream bytes B had read when it arrived */
	size_t limit;		/* at most that many, if it is not starved */
};

/* What both hosts and the path between them hold when a transfer stops
 * moving: the sockets (TCP's and the ULP's counters), the netem queue, the
 * XFRM errors.
 */
static void stream_stalled(struct env *e)
{
	static const char * const cmds[] = {
		"ss -tnie 2>/dev/null",
		"tc -s qdisc show",
		"awk '$2 != 0' /proc/net/xfrm_stat",
	};
	size_t i;

	runf("./espintcp_diag %u 2>&1 | sed 's/^/# A: /'", e->a_port);
	for (i = 0; i < ARRAY_SIZE(cmds); i++) {
		runf("%s 2>&1 | sed 's/^/# A: /'", cmds[i]);
		runf("ip netns exec %s %s 2>&1 | sed 's/^/# B: /'", e->ns,
		     cmds[i]);
	}
}

/*
 * Read and check @len pattern bytes and the end of stream from @fd, sent
 * through @src. Once an eighth has arrived, the outer path narrows to
 * BP_SQUEEZE, slower than any sender, so that ESP backs up on every
 * machine, however slow its kernel; when A's outer connection has @backlog
 * bytes queued, A sends one IKE message, then the path widens again while
 * the transfer goes on.
 *
 * IKE is not starved if it reaches B ahead of all ESP that A produces after
 * it: ahead of every stream byte the sender had not yet written when it
 * was sent. Those it had written were then read by B, queued at B, or not
 * yet acknowledged (@src's SIOCOUTQ, which counts what TCP still holds
 * unsent); read in that order, no byte is missed between the reads. B may
 * read one more chunk between the IKE's arrival and its poll() seeing it.
 * A bound in bytes, not in time: a debug kernel takes seconds for what
 * the wire does in milliseconds.
 */
static int stream_check(struct env *e, int src, int fd, size_t len,
			uint32_t seed, int backlog, struct bp_probe *pr)
{
	static const uint8_t msg[] = { 0, 0, 0, 0, 'b', 'p' };
	uint8_t *buf = malloc(BP_CHUNK), ike[64];
	bool eof = false, squeezed = false;
	struct timespec t0;
	size_t off = 0;
	int ret = -1, unacked, queued;

	pr->ike_ms = -1;
	pr->backlog = -1;
	pr->ike_off = 0;
	pr->limit = 0;
	if (!buf)
		return -1;
	while (!eof || (pr->backlog >= 0 && pr->ike_ms < 0)) {
		struct pollfd p[2] = {
			{ .fd = eof ? -1 : fd, .events = POLLIN },
			{ .fd = e->b_sk, .events = POLLIN },
		};
		ssize_t n;

		if (poll(p, 2, WAIT_MS) <= 0) {
			fprintf(stderr, "# stalled at %zu bytes\n", off);
			stream_stalled(e);
			goto out;
		}
		if (p[1].revents & POLLIN) {
			n = recv(e->b_sk, ike, sizeof(ike), 0);
			if (pr->backlog < 0 || n != sizeof(msg) ||
			    memcmp(ike, msg, sizeof(msg)))
				goto out;
			pr->ike_ms = ms_since(&t0);
			pr->ike_off = off;
			if (runf("tc qdisc change dev veth0 root netem %s",
				 BP_NETEM))
				goto out;
		}
		if (p[0].revents) {
			n = read(fd, buf, BP_CHUNK);
			if (n < 0 || (size_t)n > len - off ||
			    check_at(buf, n, seed, off)) {
				fprintf(stderr, "# corrupted at %zu bytes\n", off);
				goto out;
			}
			eof = n == 0;
			if (eof && off < len) {
				fprintf(stderr, "# short: %zu bytes\n", off);
				goto out;
			}
			off += n;
		}
		if (!squeezed && off >= len / 8) {
			if (runf("tc qdisc change dev veth0 root netem %s",
				 BP_SQUEEZE))
				goto out;
			squeezed = true;
		}
		if (pr->backlog < 0 && squeezed &&
		    outq(e->a_sk) >= backlog) {
			pr->backlog = outq(e->a_sk);
			unacked = outq(src);
			queued = inq(fd);
			if (unacked < 0 || queued < 0)
				goto out;
			pr->limit = off + unacked + queued + BP_CHUNK;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			if (send(e->a_sk, msg, sizeof(msg), 0) != sizeof(msg))
				goto out;
		}
	}
	ret = 0;
out:
	free(buf);
	return ret;
}

/* A counter of the espintcp socket with local port @port, from sock_diag. */
static long long ulp_counter(unsigned short port, const char *name)
{
	char cmd[64], line[1024], key[64], *p;
	long long val = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "./espintcp_diag %u", port);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	snprintf(key, sizeof(key), " %s=", name);
	while (fgets(line, sizeof(line), f)) {
		p = strstr(line, key);
		if (p)
			val = strtoll(p + strlen(key), NULL, 10);
	}
	pclose(f);
	return val;
}

/* Ip OutDiscards (or Ip6OutDiscards) of the calling thread's namespace. */
static long long out_discards(int family)
{
	char hdr[2048], val[2048], *h, *v, *hs, *vs;
	long long ret = -1;
	FILE *f;

	if (family == AF_INET6) {
		f = fopen("/proc/thread-self/net/snmp6", "r");
		if (!f)
			return -1;
		while (fgets(val, sizeof(val), f))
			if (sscanf(val, "Ip6OutDiscards %lld", &ret) == 1)
				break;
		fclose(f);
		return ret;
	}
	f = fopen("/proc/thread-self/net/snmp", "r");
	if (!f)
		return -1;
	while (fgets(hdr, sizeof(hdr), f) && fgets(val, sizeof(val), f)) {
		if (strncmp(hdr, "Ip: ", 4))
			continue;
		h = strtok_r(hdr, "\n ", &hs);
		v = strtok_r(val, "\n ", &vs);
		while (h && v) {
			if (!strcmp(h, "OutDiscards"))
				ret = strtoll(v, NULL, 10);
			h = strtok_r(NULL, "\n ", &hs);
			v = strtok_r(NULL, "\n ", &vs);
		}
		break;
	}
	fclose(f);
	return ret;
}

/* Sum of the XFRM counters starting with @prefix; logs the non-zero ones. */
static uint64_t xfrm_sum(const char *who, const char *prefix)
{
	FILE *f = fopen("/proc/thread-self/net/xfrm_stat", "r");
	char line[256], key[128];
	unsigned long long v;
	uint64_t ret = 0;

	if (!f)
		return ~0ULL;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%127s %llu", key, &v) != 2 || !v)
			continue;
		fprintf(stderr, "# %s: %s %llu\n", who, key, v);
		if (!strncmp(key, prefix, strlen(prefix)))
			ret += v;
	}
	fclose(f);
	return ret;
}

static uint64_t b_xfrm_sum(struct env *e, const char *prefix)
{
	uint64_t v;

	if (in_b(e))
		return ~0ULL;
	v = xfrm_sum("B", prefix);
	in_a(e);
	return v;
}

/* Tunnel mode with IPv4 inside IPv6 outer addresses. */
static void env_inner_ipv4(struct env *e)
{
	e->ifamily = AF_INET;
	e->ai = "10.72.1.1";
	e->bi = "10.72.2.1";
}

FIXTURE(bp) {
	struct env e;
};

FIXTURE_VARIANT(bp) {
	int family;
	int ifamily;
	bool tunnel;
};

FIXTURE_VARIANT_ADD(bp, tcp4_transport) { AF_INET, AF_INET, false };

FIXTURE_VARIANT_ADD(bp, tcp6_transport) { AF_INET6, AF_INET6, false };

FIXTURE_VARIANT_ADD(bp, tcp4_tunnel) { AF_INET, AF_INET, true };

/* The case of the report: IPv4 in IPv6. */
FIXTURE_VARIANT_ADD(bp, tcp6_tunnel_ipv4) { AF_INET6, AF_INET, true };

FIXTURE_TEARDOWN(bp)
{
	env_teardown(&self->e);
}

FIXTURE_SETUP(bp)
{
	struct env *e = &self->e;

	SETUP_OK(bp, env_setup(e, variant->family, variant->tunnel, ENC_TCP,
			       alg_gcm, false));
	if (variant->ifamily != variant->family)
		env_inner_ipv4(e);
	SETUP_OK(bp, sa_pair(e, "add", SPI_AB, SPI_BA, 1));
	SETUP_OK(bp, policies(e, "", 1));
	SETUP_OK(bp, runf("tc qdisc add dev veth0 root netem %s", BP_NETEM));
}

/* A local sender through a slow outer path: nothing lost, nothing dropped. */
TEST_F_TIMEOUT(bp, local_bulk, 900)
{
	struct env *e = &self->e;
	long long discards = out_discards(e->family);
	struct bp_probe pr;
	int c, s, ret;
	pid_t pid;

	ret = bulk_pair(e, &c, &s);
	if (ret) {
		fprintf(stderr, "# bulk connection: %s\n", strerror(errno));
		runf("ip route get %s; ip xfrm policy; ip -s xfrm state; %s",
		     e->bi, "grep -v ' 0$' /proc/net/xfrm_stat");
	}
	ASSERT_EQ(0, ret);
	pid = stream_sender(c, BP_LEN, 5);
	ASSERT_LT(0, pid);
	ret = stream_check(e, c, s, BP_LEN, 5, BP_BACKLOG, &pr);
	/* Nobody reads any more: the sender would block until the timeout. */
	if (ret)
		kill(pid, SIGKILL);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, wait_ok(pid));
	close(c);
	close(s);
	TH_LOG("IKE behind %d bytes of ESP: %ld ms, at stream byte %zu (limit %zu)",
	       pr.backlog, pr.ike_ms, pr.ike_off, pr.limit);
	EXPECT_LE(0, pr.ike_ms) TH_LOG("ESP never backed up");
	EXPECT_GE(pr.limit, pr.ike_off);

	/* No output error of any kind, on either side. */
	EXPECT_EQ(0, xfrm_sum("A", "XfrmOut"));
	EXPECT_EQ(0, b_xfrm_sum(e, "XfrmOut"));
	EXPECT_EQ(0, ulp_counter(e->a_port, "esp_tx_drops"));
	EXPECT_EQ(0, ulp_counter(e->a_port, "esp_tx_congestion"));
	EXPECT_EQ(discards, out_discards(e->family));
	EXPECT_LT(BP_LEN / 2000, sa_packets(e, false, true, SPI_AB));
}

/*
 * Forwarded traffic: C (10.72.3.2) reaches B's inner address through A,
 * which tunnels it to B. Nothing charges it to a sender, so when it
 * overflows A's ESP queue (sized after the socket's send buffer, made small
 * here) it is dropped as congestion; the inner TCP recovers.
 */
FIXTURE(bp_fwd) {
	struct env e;
	char c_ns[64];
	int c_fd;
};

FIXTURE_TEARDOWN(bp_fwd)
{
	if (self->c_fd >= 0)
		close(self->c_fd);
	if (self->c_ns[0])
		runf("ip netns del %s 2>/dev/null", self->c_ns);
	env_teardown(&self->e);
}

FIXTURE_SETUP(bp_fwd)
{
	static const char * const cmds[] = {
		"ip netns add %1$s",
		"ip link add veth2 type veth peer name veth3 netns %1$s",
		"ip addr add 10.72.3.1/24 dev veth2",
		"ip link set veth2 up",
		"ip -n %1$s link set lo up",
		"ip -n %1$s addr add 10.72.3.2/24 dev veth3",
		"ip -n %1$s link set veth3 up",
		"ip -n %1$s route add default via 10.72.3.1",
		"echo 1 > /proc/sys/net/ipv4/ip_forward",
		"ip xfrm policy add src 10.72.3.0/24 dst 10.72.2.1/32 dir out tmpl src 10.72.0.1 dst 10.72.0.2 proto esp reqid 1 mode tunnel",
		"ip xfrm policy add src 10.72.2.1/32 dst 10.72.3.0/24 dir fwd tmpl src 10.72.0.2 dst 10.72.0.1 proto esp reqid 1 mode tunnel",
		"tc qdisc add dev veth0 root netem " BP_NETEM,
	};
	static const char * const b_cmds[] = {
		"ip -n %s route add 10.72.3.0/24 dev veth1 src 10.72.2.1",
		"ip -n %s xfrm policy add src 10.72.2.1/32 dst 10.72.3.0/24 dir out tmpl src 10.72.0.2 dst 10.72.0.1 proto esp reqid 1 mode tunnel",
		"ip -n %s xfrm policy add src 10.72.3.0/24 dst 10.72.2.1/32 dir in tmpl src 10.72.0.1 dst 10.72.0.2 proto esp reqid 1 mode tunnel",
	};
	struct env *e = &self->e;
	int sndbuf = 64 << 10;
	char path[128];
	size_t i;

	self->c_fd = -1;
	SETUP_OK(bp_fwd, env_setup(e, AF_INET, true, ENC_TCP, alg_gcm, false));
	snprintf(self->c_ns, sizeof(self->c_ns), "espintcp-c-%d", getpid());
	for (i = 0; i < ARRAY_SIZE(cmds) + ARRAY_SIZE(b_cmds); i++) {
		const char *cmd = i < ARRAY_SIZE(cmds) ? cmds[i] :
				  b_cmds[i - ARRAY_SIZE(cmds)];
		int rc = runf(cmd, i < ARRAY_SIZE(cmds) ? self->c_ns : e->ns);

		if (rc)
			fprintf(stderr, "# failed: %s\n", cmd);
		SETUP_OK(bp_fwd, rc);
	}
	snprintf(path, sizeof(path), "/run/netns/%s", self->c_ns);
	self->c_fd = open(path, O_RDONLY | O_CLOEXEC);
	SETUP_OK(bp_fwd, self->c_fd < 0);
	SETUP_OK(bp_fwd, sa_pair(e, "add", SPI_AB, SPI_BA, 1));
	SETUP_OK(bp_fwd, setsockopt(e->a_sk, SOL_SOCKET, SO_SNDBUF, &sndbuf,
				    sizeof(sndbuf)));
}

TEST_F_TIMEOUT(bp_fwd, forwarded_bulk, 900)
{
	struct env *e = &self->e;
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(AF_INET, "10.72.2.1", BULK_PORT, &ss);
	long long discards = out_discards(AF_INET), cong;
	int one = 1, lsn, c, s, ret;
	struct bp_probe pr;
	pid_t pid;

	lsn = b_socket_family(e, AF_INET, SOCK_STREAM);
	ASSERT_LE(0, lsn);
	ASSERT_EQ(0, setsockopt(lsn, SOL_SOCKET, SO_REUSEADDR, &one,
				sizeof(one)));
	ASSERT_EQ(0, bind(lsn, (void *)&ss, len));
	ASSERT_EQ(0, listen(lsn, 1));
	ASSERT_EQ(0, setns(self->c_fd, CLONE_NEWNET));
	c = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_EQ(0, in_a(e));
	ASSERT_LE(0, c);
	ASSERT_EQ(0, connect(c, (void *)&ss, len));
	s = accept(lsn, NULL, NULL);
	ASSERT_LE(0, s);
	close(lsn);

	pid = stream_sender(c, BP_LEN, 9);
	ASSERT_LT(0, pid);
	ret = stream_check(e, c, s, BP_LEN, 9, BP_FWD_BACKLOG, &pr);
	/* Nobody reads any more: the sender would block until the timeout. */
	if (ret)
		kill(pid, SIGKILL);
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, wait_ok(pid));
	close(c);
	close(s);
	TH_LOG("IKE behind %d bytes of ESP: %ld ms, at stream byte %zu (limit %zu)",
	       pr.backlog, pr.ike_ms, pr.ike_off, pr.limit);
	EXPECT_LE(0, pr.ike_ms);
	EXPECT_GE(pr.limit, pr.ike_off);

	/* Drops there were, all of them congestion, none an XFRM error. */
	cong = ulp_counter(e->a_port, "esp_tx_congestion");
	TH_LOG("congestion drops: %lld", cong);
	EXPECT_LT(0, cong);
	EXPECT_EQ(cong, ulp_counter(e->a_port, "esp_tx_drops"));
	EXPECT_LE(discards + cong, out_discards(AF_INET));
	EXPECT_EQ(0, xfrm_sum("A", "XfrmOut"));
	EXPECT_EQ(0, b_xfrm_sum(e, "XfrmOut"));
}

/* TEST_HARNESS_MAIN, with ESPINTCP_CASES (espintcp_lib.h). */
int main(int argc, char **argv)
{
	espintcp_cases_init();
	return test_harness_run(argc, argv);
}
