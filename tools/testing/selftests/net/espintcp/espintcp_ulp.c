// SPDX-License-Identifier: GPL-2.0
/*
 * Selftests of the espintcp TCP ULP (RFC 9329) against a raw peer: the far
 * end is a plain TCP socket that reads and writes the framed byte stream
 * itself (16-bit Length counting itself, zero non-ESP marker for IKE).
 *
 * Each test runs over IPv4 and IPv6, on loopback and across a veth pair
 * between two network namespaces.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "espintcp_lib.h"

#define MAX_PAYLOAD	65533	/* Length counts itself */

static long long diag_counter(int fd, const char *name);
static long long wait_diag(int fd, const char *name, long long want);

/* Build an RFC 9329 frame: Length, then marker (IKE) or SPI, then body. */
static size_t frame(uint8_t *buf, uint32_t spi, const void *body, size_t len)
{
	size_t total = 2 + 4 + len;

	buf[0] = total >> 8;
	buf[1] = total & 0xff;
	buf[2] = spi >> 24;
	buf[3] = spi >> 16;
	buf[4] = spi >> 8;
	buf[5] = spi;
	memcpy(buf + 6, body, len);
	return total;
}

/* Read one frame from the raw side; returns the frame length or -1. */
static int read_frame(int fd, uint8_t *buf, size_t size)
{
	size_t len;

	if (read_all(fd, buf, 2))
		return -1;
	len = (buf[0] << 8) | buf[1];
	if (len < 2 || len > size || read_all(fd, buf + 2, len - 2))
		return -1;
	return len;
}

static int readable(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, ms) == 1 && (pfd.revents & (POLLIN | POLLERR));
}

static int module_loaded(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return access(path, F_OK) == 0;
}

/* Topology: loopback in a fresh netns, or two namespaces over veth. */
struct topo {
	int family;
	struct sockaddr_storage srv;	/* where the responder listens */
	socklen_t len;
	int peer_ns;			/* fd of the raw peer's netns, or -1 */
	char peer_ns_name[64];
};

/* The responder's side is this netns, the raw peer's is %s. */
static const char * const veth_setup[] = {
	"ip netns add %s",
	"ip link add veth0 type veth peer name veth1 netns %s",
	"ip addr add 10.71.0.1/24 dev veth0",
	"ip addr add fd00:71::1/64 dev veth0 nodad",
	"ip link set veth0 up",
	"ip -n %s link set lo up",
	"ip -n %s addr add 10.71.0.2/24 dev veth1",
	"ip -n %s addr add fd00:71::2/64 dev veth1 nodad",
	"ip -n %s link set veth1 up",
};

static int topo_setup(struct topo *t, int family, bool veth)
{
	struct sockaddr_in *a4 = (void *)&t->srv;
	struct sockaddr_in6 *a6 = (void *)&t->srv;
	char cmd[256], path[128];
	size_t i;

	memset(t, 0, sizeof(*t));
	t->family = family;
	t->peer_ns = -1;
	if (unshare(CLONE_NEWNET))
		return -1;
	if (run("ip link set lo up"))
		return -1;

	if (veth) {
		snprintf(t->peer_ns_name, sizeof(t->peer_ns_name),
			 "espintcp-peer-%d", getpid());
		for (i = 0; i < ARRAY_SIZE(veth_setup); i++) {
			snprintf(cmd, sizeof(cmd), veth_setup[i], t->peer_ns_name);
			if (run(cmd))
				return -1;
		}
		snprintf(path, sizeof(path), "/run/netns/%s", t->peer_ns_name);
		t->peer_ns = open(path, O_RDONLY | O_CLOEXEC);
		if (t->peer_ns < 0)
			return -1;
	}

	if (family == AF_INET) {
		a4->sin_family = AF_INET;
		inet_pton(AF_INET, veth ? "10.71.0.1" : "127.0.0.1",
			  &a4->sin_addr);
		t->len = sizeof(*a4);
	} else {
		a6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, veth ? "fd00:71::1" : "::1", &a6->sin6_addr);
		t->len = sizeof(*a6);
	}
	return 0;
}

static void topo_teardown(struct topo *t)
{
	char cmd[128];

	if (t->peer_ns >= 0)
		close(t->peer_ns);
	/* Also after a setup that failed before opening it. */
	if (t->peer_ns_name[0]) {
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null",
			 t->peer_ns_name);
		run(cmd);
	}
}

/* A socket in the raw peer's namespace. */
static int peer_socket(struct topo *t, int type)
{
	int self, fd;

	if (t->peer_ns < 0)
		return socket(t->family, type, 0);
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0 || setns(t->peer_ns, CLONE_NEWNET))
		return -1;
	fd = socket(t->family, type, 0);
	if (setns(self, CLONE_NEWNET))
		fd = -1;
	close(self);
	return fd;
}

static int listen_any(struct topo *t)
{
	int one = 1, fd = socket(t->family, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (void *)&t->srv, t->len) || listen(fd, 64) ||
	    getsockname(fd, (void *)&t->srv, &t->len))
		return -1;
	return fd;
}

/*
 * One RFC 9329 connection: the raw peer is the TCP Originator and sends
 * IKETCP; the responder reads the prefix and, unless told not to, attaches.
 */
static int connect_pair(struct topo *t, int lfd, int *raw, int *ulp,
			bool do_attach)
{
	char prefix[6];
	int one = 1;

	*raw = peer_socket(t, SOCK_STREAM);
	if (*raw < 0 || connect(*raw, (void *)&t->srv, t->len))
		return -1;
	setsockopt(*raw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*ulp = accept(lfd, NULL, NULL);
	if (*ulp < 0 || write_all(*raw, "IKETCP", 6) ||
	    read_all(*ulp, prefix, 6) || memcmp(prefix, "IKETCP", 6))
		return -1;
	return do_attach ? attach(*ulp) : 0;
}

FIXTURE(ulp) {
	struct topo t;
	int lfd, raw, ulp;
	const char *borrowed_esp;	/* stock ESP type loaded by a test */
	char saved_tcp_mem[128];	/* net.ipv4.tcp_mem changed by a test */
};

FIXTURE_VARIANT(ulp) {
	int family;
	bool veth;
};

FIXTURE_VARIANT_ADD(ulp, ipv4_lo) { .family = AF_INET, .veth = false };
FIXTURE_VARIANT_ADD(ulp, ipv6_lo) { .family = AF_INET6, .veth = false };
FIXTURE_VARIANT_ADD(ulp, ipv4_veth) { .family = AF_INET, .veth = true };
FIXTURE_VARIANT_ADD(ulp, ipv6_veth) { .family = AF_INET6, .veth = true };

static void return_esp(const char *esp)
{
	char cmd[64];

	run("ip xfrm state flush");
	snprintf(cmd, sizeof(cmd), "rmmod %s 2>/dev/null", esp);
	/* The SA's type reference goes with the SA, after a grace period. */
	for (int i = 0; i < WAIT_MS / 10 && run(cmd); i++)
		usleep(10000);
}

#define TCP_MEM "/proc/sys/net/ipv4/tcp_mem"

/*
 * net.ipv4.tcp_mem is global and exists in the initial namespace only:
 * read (@old) and write (@val) it there.
 */
static int init_net_sysctl(const char *path, const char *val, char *old,
			   size_t oldlen)
{
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	int init = open("/proc/1/ns/net", O_RDONLY | O_CLOEXEC);
	int fd, ret = -1;
	ssize_t n;

	if (self < 0 || init < 0 || setns(init, CLONE_NEWNET))
		goto out;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		ret = 0;
		if (old) {
			n = read(fd, old, oldlen - 1);
			old[n > 0 ? n : 0] = 0;
			if (n <= 0)
				ret = -1;
		}
		if (val && write(fd, val, strlen(val)) != (ssize_t)strlen(val))
			ret = -1;
		close(fd);
	}
	if (setns(self, CLONE_NEWNET))
		ret = -1;
out:
	if (self >= 0)
		close(self);
	if (init >= 0)
		close(init);
	return ret;
}

static int inject_ctl(const char *cmd);

FIXTURE_TEARDOWN(ulp)
{
	/* A test that failed before stopping the injector. */
	if (module_loaded("espintcp_inject"))
		inject_ctl("stop");
	if (self->saved_tcp_mem[0])
		init_net_sysctl(TCP_MEM, self->saved_tcp_mem, NULL, 0);
	if (self->borrowed_esp)
		return_esp(self->borrowed_esp);
	if (self->raw >= 0)
		close(self->raw);
	if (self->ulp >= 0)
		close(self->ulp);
	if (self->lfd >= 0)
		close(self->lfd);
	topo_teardown(&self->t);
}

FIXTURE_SETUP(ulp)
{
	signal(SIGPIPE, SIG_IGN);
	self->lfd = -1;
	self->raw = -1;
	self->ulp = -1;
	SETUP_OK(ulp, topo_setup(&self->t, variant->family, variant->veth));
	self->lfd = listen_any(&self->t);
	SETUP_OK(ulp, self->lfd < 0);
	SETUP_OK(ulp, connect_pair(&self->t, self->lfd, &self->raw, &self->ulp,
				   true));
}

static void send_ike(struct __test_metadata *_metadata, int fd,
		     const void *body, size_t len)
{
	uint8_t buf[2 + 4 + 4096];

	ASSERT_LE(len, sizeof(buf) - 6);
	ASSERT_EQ(0, write_all(fd, buf, frame(buf, 0, body, len)));
}

TEST_F(ulp, one_message_per_recv)
{
	uint8_t buf[3 * (6 + 100)], out[200];
	size_t n = 0;
	int i;

	/* Three frames in one write. */
	for (i = 0; i < 3; i++) {
		uint8_t body[100];

		fill(body, 10 + i, i);
		n += frame(buf + n, 0, body, 10 + i);
	}
	ASSERT_EQ(0, write_all(self->raw, buf, n));
	for (i = 0; i < 3; i++) {
		ASSERT_TRUE(readable(self->ulp, WAIT_MS));
		ASSERT_EQ(4 + 10 + i, recv(self->ulp, out, sizeof(out), 0));
		ASSERT_EQ(0, memcmp(out, "\0\0\0\0", 4));
		ASSERT_EQ(0, check_fill(out + 4, 10 + i, i));
	}
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
	ASSERT_EQ(EAGAIN, errno);
}

TEST_F(ulp, peek_and_trunc)
{
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint8_t out[64];

	send_ike(_metadata, self->raw, "first-message", 13);
	send_ike(_metadata, self->raw, "second", 6);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(17, recv(self->ulp, out, sizeof(out), MSG_PEEK));
	ASSERT_EQ(17, recv(self->ulp, out, sizeof(out), MSG_PEEK));

	/* A short buffer: the head, MSG_TRUNC, the rest dropped. */
	iov.iov_base = out;
	iov.iov_len = 8;
	ASSERT_EQ(8, recvmsg(self->ulp, &msg, 0));
	ASSERT_TRUE(msg.msg_flags & MSG_TRUNC);
	ASSERT_EQ(0, memcmp(out + 4, "firs", 4));

	/* MSG_TRUNC in flags returns the real length. */
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(10, recv(self->ulp, out, 2, MSG_TRUNC));
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
	ASSERT_EQ(EAGAIN, errno);
}

TEST_F(ulp, rcvtimeo)
{
	struct timeval tv = { .tv_usec = 100000 };
	uint8_t out[16];

	ASSERT_EQ(0, setsockopt(self->ulp, SOL_SOCKET, SO_RCVTIMEO, &tv,
				sizeof(tv)));
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
}

TEST_F(ulp, eof_after_messages)
{
	uint8_t out[64];

	send_ike(_metadata, self->raw, "last", 4);
	ASSERT_EQ(0, shutdown(self->raw, SHUT_WR));
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(8, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(0, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, recv(self->ulp, out, sizeof(out), 0));
}

TEST_F_TIMEOUT(ulp, split_at_every_byte, 300)
{
	uint8_t buf[64], out[64], body[40];
	size_t len, k;

	fill(body, sizeof(body), 7);
	len = frame(buf, 0, body, sizeof(body));
	for (k = 1; k < len; k++) {
		ASSERT_EQ(0, write_all(self->raw, buf, k));
		/* An incomplete message never makes the socket readable. */
		ASSERT_FALSE(readable(self->ulp, 0)) TH_LOG("split at %zu", k);
		ASSERT_EQ(0, write_all(self->raw, buf + k, len - k));
		ASSERT_TRUE(readable(self->ulp, WAIT_MS));
		ASSERT_EQ(len - 2, recv(self->ulp, out, sizeof(out), 0));
		ASSERT_EQ(0, check_fill(out + 4, sizeof(body), 7));
	}
}

TEST_F(ulp, raw_bytes_do_not_make_readable)
{
	uint8_t esp[2 + 20];
	int n;

	/* An ESP frame and a keepalive: nothing for userspace. */
	frame(esp, 0x01020304, "0123456789abcdef", 16);
	ASSERT_EQ(0, write_all(self->raw, esp, sizeof(esp)));
	ASSERT_EQ(0, write_all(self->raw, "\0\3\xff", 3));
	send_ike(_metadata, self->raw, "x", 1);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	n = recv(self->ulp, esp, sizeof(esp), 0);
	ASSERT_EQ(5, n);
	ASSERT_FALSE(readable(self->ulp, 0));
	/* Each frame counted as what it is. */
	ASSERT_EQ(1, diag_counter(self->ulp, "esp_rx"));
	ASSERT_EQ(1, diag_counter(self->ulp, "keepalive_rx"));
	ASSERT_EQ(1, diag_counter(self->ulp, "ike_rx"));
	ASSERT_EQ(0, diag_counter(self->ulp, "bad_rx"));
}

TEST_F(ulp, short_messages_dropped)
{
	uint8_t out[16];

	/* Length 2 (empty), 3 (not a keepalive), 5 (3 bytes): too short. */
	ASSERT_EQ(0, write_all(self->raw, "\0\2", 2));
	ASSERT_EQ(0, write_all(self->raw, "\0\3\x01", 3));
	ASSERT_EQ(0, write_all(self->raw, "\0\5\0\0\0", 5));
	send_ike(_metadata, self->raw, "ok", 2);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(6, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out + 4, "ok", 2));
	ASSERT_EQ(3, diag_counter(self->ulp, "bad_rx"));
	ASSERT_EQ(0, diag_counter(self->ulp, "keepalive_rx"));
	ASSERT_EQ(1, diag_counter(self->ulp, "ike_rx"));
}

/* Length 6: a non-ESP marker and nothing after it is no IKE message. */
TEST_F(ulp, marker_only_frame_dropped)
{
	uint8_t out[16];

	ASSERT_EQ(0, write_all(self->raw, "\0\6\0\0\0\0", 6));
	send_ike(_metadata, self->raw, "ok", 2);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(6, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out + 4, "ok", 2));
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(1, diag_counter(self->ulp, "bad_rx"));
	ASSERT_EQ(1, diag_counter(self->ulp, "ike_rx"));
}

static void fatal_length(struct __test_metadata *_metadata, int raw, int ulp,
			 const char *len)
{
	uint8_t out[16];

	ASSERT_EQ(0, write_all(raw, len, 2));
	ASSERT_TRUE(readable(ulp, WAIT_MS));
	ASSERT_EQ(-1, recv(ulp, out, sizeof(out), 0));
	ASSERT_EQ(EPROTO, errno);
	/* The connection is reset: the peer sees RST (or at least EOF). */
	ASSERT_TRUE(readable(raw, WAIT_MS));
	ASSERT_GE(0, read(raw, out, sizeof(out)));
}

TEST_F(ulp, fatal_length_zero)
{
	fatal_length(_metadata, self->raw, self->ulp, "\0\0");
}

TEST_F(ulp, fatal_length_one)
{
	fatal_length(_metadata, self->raw, self->ulp, "\0\1");
}

TEST_F(ulp, send_is_framed)
{
	uint8_t msg[4 + 300], buf[400];

	memset(msg, 0, 4);
	fill(msg + 4, 300, 3);
	ASSERT_EQ(sizeof(msg), send(self->ulp, msg, sizeof(msg), 0));
	ASSERT_EQ(2 + sizeof(msg), read_frame(self->raw, buf, sizeof(buf)));
	ASSERT_EQ(0, memcmp(buf + 2, msg, sizeof(msg)));
}

TEST_F(ulp, send_limits)
{
	static uint8_t big[MAX_PAYLOAD + 1], buf[MAX_PAYLOAD + 2];

	ASSERT_EQ(-1, send(self->ulp, big, MAX_PAYLOAD + 1, 0));
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(-1, send(self->ulp, "\0\0\0", 3, 0));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, send(self->ulp, "\1\2\3\4esp", 7, 0));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, send(self->ulp, big, 8, MSG_OOB));
	ASSERT_EQ(EOPNOTSUPP, errno);
	ASSERT_EQ(-1, recv(self->ulp, buf, 8, MSG_OOB));
	ASSERT_EQ(EOPNOTSUPP, errno);

	fill(big + 4, MAX_PAYLOAD - 4, 9);
	ASSERT_EQ(MAX_PAYLOAD, send(self->ulp, big, MAX_PAYLOAD, 0));
	ASSERT_EQ(MAX_PAYLOAD + 2, read_frame(self->raw, buf, sizeof(buf)));
	ASSERT_EQ(0, buf[0] == 0xff && buf[1] == 0xff ? 0 : -1);
	ASSERT_EQ(0, check_fill(buf + 6, MAX_PAYLOAD - 4, 9));
}

/* Fill the connection until a non-blocking send says EAGAIN. */
static int fill_until_eagain(int fd, size_t len, int max)
{
	static uint8_t msg[16384];
	int sent = 0;

	memset(msg, 0, 4);
	while (sent < max) {
		fill(msg + 4, len - 4, sent);
		if (send(fd, msg, len, MSG_DONTWAIT) != (ssize_t)len)
			return errno == EAGAIN ? sent : -1;
		sent++;
	}
	return -1;
}

TEST_F_TIMEOUT(ulp, nonblocking_send_eagain, 300)
{
	static uint8_t buf[16384];
	int sent, i;

	sent = fill_until_eagain(self->ulp, 10000, 100000);
	ASSERT_LT(0, sent);
	/* Every message that was accepted arrives whole, in order. */
	for (i = 0; i < sent; i++) {
		ASSERT_EQ(10002, read_frame(self->raw, buf, sizeof(buf)));
		ASSERT_EQ(0, check_fill(buf + 6, 10000 - 4, i));
	}
}

TEST_F_TIMEOUT(ulp, sndtimeo, 300)
{
	struct timeval tv = { .tv_usec = 100000 };
	static uint8_t msg[10000];
	int i;

	/* The peer does not read: a timed blocking send must give up. */
	ASSERT_EQ(0, setsockopt(self->ulp, SOL_SOCKET, SO_SNDTIMEO, &tv,
				sizeof(tv)));
	memset(msg, 0, 4);
	for (i = 0; i < 100000; i++)
		if (send(self->ulp, msg, sizeof(msg), 0) != sizeof(msg))
			break;
	ASSERT_LT(i, 100000);
	ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK)
		TH_LOG("send %d: %s", i, strerror(errno));
}

struct sender {
	int fd, id, count;
};

static void *sender_thread(void *arg)
{
	struct sender *s = arg;
	uint8_t msg[4 + 8 + 2000];
	int i;

	for (i = 0; i < s->count; i++) {
		size_t len = 4 + 8 + (s->id * 131 + i * 17) % 2000;
		uint32_t seed = s->id << 16 | i;

		memset(msg, 0, 4);
		memcpy(msg + 4, &seed, 4);
		memcpy(msg + 8, &len, 4);
		fill(msg + 12, len - 12, seed);
		if (send(s->fd, msg, len, 0) != (ssize_t)len)
			return (void *)1;
	}
	return NULL;
}

TEST_F_TIMEOUT(ulp, concurrent_senders, 300)
{
	enum { THREADS = 4, COUNT = 300 };
	struct sender s[THREADS];
	pthread_t th[THREADS];
	int next[THREADS] = { 0 };
	uint8_t buf[4096];
	int i;

	for (i = 0; i < THREADS; i++) {
		s[i] = (struct sender){ .fd = self->ulp, .id = i, .count = COUNT };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, sender_thread, &s[i]));
	}
	/* Frames never interleave: each one is whole and in per-thread order. */
	for (i = 0; i < THREADS * COUNT; i++) {
		uint32_t seed, len;
		int n = read_frame(self->raw, buf, sizeof(buf));

		ASSERT_LT(12, n);
		memcpy(&seed, buf + 6, 4);
		memcpy(&len, buf + 10, 4);
		ASSERT_EQ(n - 2, len);
		ASSERT_LT(seed >> 16, THREADS);
		ASSERT_EQ(next[seed >> 16]++, seed & 0xffff);
		ASSERT_EQ(0, check_fill(buf + 14, len - 12, seed));
	}
	for (i = 0; i < THREADS; i++) {
		void *ret;

		pthread_join(th[i], &ret);
		ASSERT_EQ(NULL, ret);
	}
}

/* One counter of the socket's espintcp_diag line, or -1. */
static long long diag_counter(int fd, const char *name)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);
	char cmd[64], line[1024], *p;
	long long v = -1;
	FILE *f;

	if (getsockname(fd, (void *)&a, &len))
		return -1;
	snprintf(cmd, sizeof(cmd), "./espintcp_diag %u",
		 ntohs(a.ss_family == AF_INET6 ?
		       ((struct sockaddr_in6 *)&a)->sin6_port :
		       ((struct sockaddr_in *)&a)->sin_port));
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (fgets(line, sizeof(line), f)) {
		p = strstr(line, name);
		if (p && p[strlen(name)] == '=')
			v = atoll(p + strlen(name) + 1);
	}
	pclose(f);
	return v;
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/* Poll a counter until it is @want, for WAIT_MS; returns the last value. */
static long long wait_diag(int fd, const char *name, long long want)
{
	long long end = now_ms() + WAIT_MS, v = diag_counter(fd, name);

	while (v != want && now_ms() < end) {
		usleep(20000);
		v = diag_counter(fd, name);
	}
	return v;
}

/* One IKE message of @len bytes (marker included) from the raw peer. */
static void send_big_ike(struct __test_metadata *_metadata, int fd,
			 size_t len, uint32_t seed)
{
	static uint8_t buf[2 + MAX_PAYLOAD];

	ASSERT_LE(4, len);
	ASSERT_GE(MAX_PAYLOAD, len);
	buf[0] = (2 + len) >> 8;
	buf[1] = (2 + len) & 0xff;
	memset(buf + 2, 0, 4);
	fill(buf + 6, len - 4, seed);
	ASSERT_EQ(0, write_all(fd, buf, 2 + len));
}

static void recv_big_ike(struct __test_metadata *_metadata, int fd,
			 size_t len, uint32_t seed)
{
	static uint8_t out[MAX_PAYLOAD + 1];

	ASSERT_TRUE(readable(fd, WAIT_MS))
		TH_LOG("nothing to read; ike_rx_drops=%lld",
		       diag_counter(fd, "ike_rx_drops"));
	ASSERT_EQ(len, recv(fd, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out, "\0\0\0\0", 4));
	ASSERT_EQ(0, check_fill(out + 4, len - 4, seed));
}

/* The largest message RFC 9329 can frame, with the default buffers. */
TEST_F_TIMEOUT(ulp, ike_max_size, 300)
{
	send_big_ike(_metadata, self->raw, MAX_PAYLOAD, 1);
	recv_big_ike(_metadata, self->ulp, MAX_PAYLOAD, 1);
	send_big_ike(_metadata, self->raw, MAX_PAYLOAD - 1, 2);
	recv_big_ike(_metadata, self->ulp, MAX_PAYLOAD - 1, 2);
	ASSERT_EQ(0, diag_counter(self->ulp, "ike_rx_drops"));
	ASSERT_EQ(2, diag_counter(self->ulp, "ike_rx"));
}

/*
 * A message whose copy alone exceeds SO_RCVBUF is admitted into an empty
 * queue, as a datagram socket admits one while below its limit; the next
 * one, with the queue at the limit, is dropped and counted.
 */
TEST_F_TIMEOUT(ulp, ike_larger_than_rcvbuf, 300)
{
	/* Doubled by the kernel: above any Length, below one message's copy. */
	int rcvbuf = 40000;
	uint8_t out[16];

	ASSERT_EQ(0, setsockopt(self->ulp, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
				sizeof(rcvbuf)));
	send_big_ike(_metadata, self->raw, MAX_PAYLOAD, 1);
	send_big_ike(_metadata, self->raw, 50000, 2);
	ASSERT_EQ(1, wait_diag(self->ulp, "ike_rx_drops", 1));
	ASSERT_EQ(1, diag_counter(self->ulp, "ike_rx"));
	recv_big_ike(_metadata, self->ulp, MAX_PAYLOAD, 1);
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
	ASSERT_EQ(EAGAIN, errno);
	/* The queue is empty again. */
	send_big_ike(_metadata, self->raw, 50000, 3);
	recv_big_ike(_metadata, self->ulp, 50000, 3);
	ASSERT_EQ(1, diag_counter(self->ulp, "ike_rx_drops"));
}

/*
 * A message that SO_RCVBUF allows but TCP's receive window (about half of
 * the buffer, less what is queued) does not: once its head was parsed
 * alone, the rest can never be in TCP's queue at once. The parser must take
 * what arrived rather than wait for all of it, or both sides stall. The
 * rest comes in one write (full segments: the window stops the peer), or
 * in small segments, which fill TCP's memory before the window closes.
 */
static void ike_longer_than_window(struct __test_metadata *_metadata,
				   int raw, int ulp, size_t chunk)
{
	enum { LEN = 63000, HEAD = 100 };	/* Length, of 64000 */
	static uint8_t msg[LEN], out[LEN];
	int rcvbuf = 32000, inq = -1, one = 1, i, status;
	pid_t pid;

	ASSERT_EQ(0, setsockopt(ulp, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
				sizeof(rcvbuf)));
	/* Move the window's right edge past what was offered with the
	 * default buffer, which TCP never takes back.
	 */
	for (i = 0; i < 200; i++) {
		send_big_ike(_metadata, raw, 1000, i);
		recv_big_ike(_metadata, ulp, 1000, i);
	}

	msg[0] = LEN >> 8;
	msg[1] = LEN & 0xff;
	fill(msg + 6, LEN - 6, 7);
	ASSERT_EQ(0, write_all(raw, msg, HEAD));
	/* The head was parsed: nothing is left in TCP's queue. */
	for (i = 0; i < WAIT_MS / 10; i++) {
		ASSERT_EQ(0, ioctl(ulp, SIOCINQ, &inq));
		if (!inq)
			break;
		usleep(10000);
	}
	ASSERT_EQ(0, inq);

	ASSERT_EQ(0, setsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &one,
				sizeof(one)));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		for (i = HEAD; i < LEN; i += chunk)
			if (write_all(raw, msg + i,
				      LEN - i < (int)chunk ? LEN - i : chunk))
				_exit(1);
		_exit(0);
	}
	ASSERT_TRUE(readable(ulp, WAIT_MS))
		TH_LOG("stalled; rx_unstall=%lld",
		       diag_counter(ulp, "rx_unstall"));
	ASSERT_EQ(LEN - 2, recv(ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out, msg + 2, LEN - 2));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, status);
	ASSERT_LT(0, diag_counter(ulp, "rx_unstall"));
}

TEST_F_TIMEOUT(ulp, ike_longer_than_window, 300)
{
	ike_longer_than_window(_metadata, self->raw, self->ulp, 65536);
}

TEST_F_TIMEOUT(ulp, ike_longer_than_window_small_segments, 300)
{
	ike_longer_than_window(_metadata, self->raw, self->ulp, 100);
}

TEST_F_TIMEOUT(ulp, receive_flood_bounded, 300)
{
	enum { FLOOD = 3000 };
	uint8_t buf[2 + 4 + 1000], out[2000];
	int i, n, got = 0, last = -1, rcvbuf = 65536;
	long long drops, kept, end;

	ASSERT_EQ(0, setsockopt(self->ulp, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
				sizeof(rcvbuf)));
	for (i = 0; i < FLOOD; i++) {
		uint8_t body[1000];

		fill(body, sizeof(body), i);
		ASSERT_EQ(0, write_all(self->raw, buf,
				       frame(buf, 0, body, sizeof(body))));
	}
	/* Everything parsed: each message queued or dropped and counted. */
	for (end = now_ms() + WAIT_MS;; usleep(20000)) {
		drops = diag_counter(self->ulp, "ike_rx_drops");
		kept = diag_counter(self->ulp, "ike_rx");
		if (drops + kept == FLOOD || now_ms() > end)
			break;
	}
	ASSERT_EQ(FLOOD, drops + kept);
	/* Whatever was kept is whole and in order. */
	while ((n = recv(self->ulp, out, sizeof(out), MSG_DONTWAIT)) > 0) {
		ASSERT_EQ(1004, n);
		for (i = last + 1; i < FLOOD; i++)
			if (!check_fill(out + 4, 1000, i))
				break;
		ASSERT_GT(FLOOD, i);
		last = i;
		got++;
	}
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_LT(0, got);
	ASSERT_GT(FLOOD, got) TH_LOG("a 64 KiB receive buffer kept %d", got);
	ASSERT_EQ(FLOOD - got, drops);
	/* Read, the queue takes messages again. */
	send_ike(_metadata, self->raw, "end", 3);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(7, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out + 4, "end", 3));
}

TEST_F(ulp, prequeued_before_attach)
{
	int raw, ulp;
	uint8_t out[32];

	/* The first IKE message sits in the queue when the ULP attaches. */
	raw = peer_socket(&self->t, SOCK_STREAM);
	ASSERT_LE(0, raw);
	ASSERT_EQ(0, connect(raw, (void *)&self->t.srv, self->t.len));
	ulp = accept(self->lfd, NULL, NULL);
	ASSERT_LE(0, ulp);
	ASSERT_EQ(0, write_all(raw, "IKETCP", 6));
	send_ike(_metadata, raw, "early", 5);
	ASSERT_EQ(0, read_all(ulp, out, 6));
	/* Wait until the message bytes are queued, then attach. */
	for (int i = 0; i < 1000; i++) {
		int inq = 0;

		ASSERT_EQ(0, ioctl(ulp, FIONREAD, &inq));
		if (inq == 11)
			break;
		ASSERT_TRUE(readable(ulp, WAIT_MS));
	}
	ASSERT_EQ(0, attach(ulp));
	ASSERT_TRUE(readable(ulp, WAIT_MS));
	ASSERT_EQ(9, recv(ulp, out, sizeof(out), 0));
	ASSERT_EQ(0, memcmp(out + 4, "early", 5));
	close(raw);
	close(ulp);
}

TEST_F(ulp, attach_refused)
{
	int fd, raw, ulp;

	/* Twice on the same socket. */
	ASSERT_EQ(-1, attach(self->ulp));
	ASSERT_EQ(EEXIST, errno);
	/* A socket with the ULP cannot listen. */
	ASSERT_EQ(-1, listen(self->ulp, 1));
	/* Listening and unconnected sockets, UDP sockets. */
	ASSERT_EQ(-1, attach(self->lfd));
	fd = socket(self->t.family, SOCK_STREAM, 0);
	ASSERT_EQ(-1, attach(fd));
	ASSERT_EQ(ENOTCONN, errno);
	close(fd);
	fd = socket(self->t.family, SOCK_DGRAM, 0);
	ASSERT_EQ(-1, attach(fd));
	close(fd);
	/* Another ULP first. */
	ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, false));
	if (!setsockopt(ulp, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"))) {
		ASSERT_EQ(-1, attach(ulp));
		ASSERT_EQ(EEXIST, errno);
	}
	close(raw);
	close(ulp);
}

/*
 * Pages are not messages: sendfile() and splice() into the socket are
 * refused (6.1 reaches our sendpage, 6.12 our sendmsg with
 * MSG_SPLICE_PAGES), and nothing of them reaches the stream.
 */
TEST_F(ulp, sendfile_and_splice_refused)
{
	char path[] = "/tmp/espintcp-sendfile.XXXXXX";
	uint8_t msg[4 + 64], buf[128];
	int fd, pipefd[2];
	off_t off = 0;

	memset(msg, 0, 4);
	fill(msg + 4, 64, 7);
	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	unlink(path);
	ASSERT_EQ(0, write_all(fd, msg, sizeof(msg)));

	ASSERT_EQ(-1, sendfile(self->ulp, fd, &off, sizeof(msg)));
	EXPECT_EQ(EOPNOTSUPP, errno);
	close(fd);

	ASSERT_EQ(0, pipe(pipefd));
	ASSERT_EQ(0, write_all(pipefd[1], msg, sizeof(msg)));
	ASSERT_EQ(-1, splice(pipefd[0], NULL, self->ulp, NULL, sizeof(msg),
			     SPLICE_F_NONBLOCK));
	EXPECT_EQ(EOPNOTSUPP, errno);
	close(pipefd[0]);
	close(pipefd[1]);

	/* The stream is intact: the next message is the first frame. */
	fill(msg + 4, 64, 8);
	ASSERT_EQ(sizeof(msg), send(self->ulp, msg, sizeof(msg), 0));
	ASSERT_EQ(2 + sizeof(msg), read_frame(self->raw, buf, sizeof(buf)));
	ASSERT_EQ(0, memcmp(buf + 2, msg, sizeof(msg)));
}

/*
 * SO_PEEK_OFF (honoured by TCP since 6.10) has no meaning for messages:
 * refused on an espintcp socket, and a socket that has one set cannot
 * become one.
 */
TEST_F(ulp, peek_offset_refused)
{
	int zero = 0, raw, ulp;

	ASSERT_EQ(-1, setsockopt(self->ulp, SOL_SOCKET, SO_PEEK_OFF, &zero,
				 sizeof(zero)));
	ASSERT_EQ(EOPNOTSUPP, errno);

	ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, false));
	if (setsockopt(ulp, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero))) {
		/* TCP without peek offsets (6.1): nothing to refuse. */
		ASSERT_EQ(EOPNOTSUPP, errno);
		ASSERT_EQ(0, attach(ulp));
	} else {
		ASSERT_EQ(-1, attach(ulp));
		ASSERT_EQ(EINVAL, errno);
	}
	close(raw);
	close(ulp);
}

/* TCP repair mode cannot be entered under the ULP, nor the ULP attached to
 * a socket in repair mode; IKE still flows afterwards.
 */
TEST_F(ulp, repair_mode_refused)
{
	int on = 1, off = 0, raw, ulp;
	uint8_t buf[64];

	ASSERT_EQ(-1, setsockopt(self->ulp, IPPROTO_TCP, TCP_REPAIR, &on,
				 sizeof(on)));
	ASSERT_EQ(EOPNOTSUPP, errno);
	send_ike(_metadata, self->raw, "after", 5);
	ASSERT_EQ(4 + 5, recv(self->ulp, buf, sizeof(buf), 0));
	ASSERT_EQ(0, memcmp(buf + 4, "after", 5));

	ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, false));
	ASSERT_EQ(0, setsockopt(ulp, IPPROTO_TCP, TCP_REPAIR, &on, sizeof(on)));
	ASSERT_EQ(-1, attach(ulp));
	ASSERT_EQ(EBUSY, errno);
	ASSERT_EQ(0, setsockopt(ulp, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off)));
	ASSERT_EQ(0, attach(ulp));
	close(raw);
	close(ulp);
}

/*
 * After a fatal framing error has been reported, the stream is over: recv()
 * returns 0 and poll() says readable, even though bytes the stopped parser
 * never read are still in the TCP queue.
 */
TEST_F(ulp, end_of_stream_after_abort)
{
	static const uint8_t bad[2 + 12] = { 0, 1 };
	struct pollfd pfd = { .fd = self->ulp, .events = POLLIN };
	uint8_t out[16];
	ssize_t n;
	int i;

	ASSERT_EQ(0, write_all(self->raw, bad, sizeof(bad)));
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(-1, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
	ASSERT_EQ(EPROTO, errno);
	/* The reset that follows may report the error once more. */
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(1, poll(&pfd, 1, WAIT_MS));
		ASSERT_TRUE(pfd.revents & POLLIN);
		n = recv(self->ulp, out, sizeof(out), MSG_DONTWAIT);
		if (!n)
			break;
		ASSERT_EQ(-1, n);
		ASSERT_EQ(EPROTO, errno);
	}
	ASSERT_EQ(0, n);
	ASSERT_EQ(0, recv(self->ulp, out, sizeof(out), 0));
}

/*
 * A message the peer never finished before its FIN is discarded: recv()
 * returns 0, also when strparser had taken its head and the rest that did
 * arrive is still waiting in the TCP queue.
 */
TEST_F(ulp, partial_message_at_fin_discarded)
{
	uint8_t buf[2 + 4 + 1000], out[16];

	fill(buf + 6, 1000, 5);
	frame(buf, 0, buf + 6, 1000);
	ASSERT_EQ(0, write_all(self->raw, buf, 26));
	ASSERT_EQ(0, write_all(self->raw, buf + 26, 30));
	ASSERT_EQ(0, write_all(self->raw, buf + 56, 30));
	ASSERT_EQ(0, shutdown(self->raw, SHUT_WR));
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(0, recv(self->ulp, out, sizeof(out), MSG_DONTWAIT));
}

/*
 * SO_RCVLOWAT counts stream bytes: TCP would hold the parser back until
 * that many arrived. Refused, and a socket that has one cannot attach.
 */
TEST_F(ulp, rcvlowat_refused)
{
	int lowat = 100, raw, ulp;

	ASSERT_EQ(-1, setsockopt(self->ulp, SOL_SOCKET, SO_RCVLOWAT, &lowat,
				 sizeof(lowat)));
	ASSERT_EQ(EOPNOTSUPP, errno);

	ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, false));
	ASSERT_EQ(0, setsockopt(ulp, SOL_SOCKET, SO_RCVLOWAT, &lowat,
				sizeof(lowat)));
	ASSERT_EQ(-1, attach(ulp));
	ASSERT_EQ(EINVAL, errno);
	close(raw);
	close(ulp);
}

TEST_F(ulp, needs_cap_net_admin)
{
	int raw, ulp, status;
	pid_t pid;

	ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, false));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct __user_cap_header_struct hdr = {
			.version = _LINUX_CAPABILITY_VERSION_3,
		};
		struct __user_cap_data_struct data[2] = {};

		if (syscall(SYS_capget, &hdr, data))
			_exit(2);
		data[0].effective &= ~(1U << CAP_NET_ADMIN);
		if (syscall(SYS_capset, &hdr, data))
			_exit(2);
		_exit(attach(ulp) == -1 && errno == EPERM ? 0 : 1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	close(raw);
	close(ulp);
}

struct blocked {
	int fd;
	int ret, err;
};

static void *blocked_recv(void *arg)
{
	struct blocked *b = arg;
	char buf[16];

	b->ret = recv(b->fd, buf, sizeof(buf), 0);
	b->err = errno;
	return NULL;
}

TEST_F(ulp, peer_reset_wakes_reader)
{
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };
	struct blocked b = { .fd = self->ulp };
	pthread_t th;

	ASSERT_EQ(0, pthread_create(&th, NULL, blocked_recv, &b));
	/* Half a frame, then RST. */
	ASSERT_EQ(0, write_all(self->raw, "\0\40\0", 3));
	ASSERT_EQ(0, setsockopt(self->raw, SOL_SOCKET, SO_LINGER, &lin,
				sizeof(lin)));
	close(self->raw);
	self->raw = -1;
	pthread_join(th, NULL);
	ASSERT_TRUE(b.ret == 0 || (b.ret == -1 && b.err == ECONNRESET))
		TH_LOG("recv %d errno %d", b.ret, b.err);
}

static void on_alarm(int sig)
{
}

/* A signal interrupts blocking recv and send with EINTR (no SA_RESTART).
 * The timer repeats: a signal that lands between two calls (a slow guest
 * may still be filling the send buffer) must not leave the next one
 * blocked for ever.
 */
TEST_F_TIMEOUT(ulp, signal_interrupts_blocking_calls, 300)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = {
		.it_value.tv_usec = 200000,
		.it_interval.tv_usec = 200000,
	};
	struct itimerval off = { 0 };
	static uint8_t msg[10000];
	uint8_t out[16];
	ssize_t n;
	int i;

	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	n = recv(self->ulp, out, sizeof(out), 0);
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &off, NULL));
	ASSERT_EQ(-1, n);
	ASSERT_EQ(EINTR, errno);

	/* The peer does not read: blocking sends end up waiting. */
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	for (i = 0; i < 100000; i++) {
		n = send(self->ulp, msg, sizeof(msg), 0);
		if (n != sizeof(msg))
			break;
	}
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &off, NULL));
	ASSERT_LT(i, 100000);
	ASSERT_EQ(-1, n);
	ASSERT_EQ(EINTR, errno);
}

TEST_F_TIMEOUT(ulp, close_with_queued_messages, 300)
{
	uint8_t msg[2 + 4 + 1000] = { 0 };
	int i, sent, got = 0;
	ssize_t n;

	for (i = 0; i < 20; i++)
		send_ike(_metadata, self->raw, "queued", 6);
	sent = fill_until_eagain(self->ulp, 4 + 1000, 100000);
	ASSERT_LT(0, sent);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	close(self->ulp);
	self->ulp = -1;
	/*
	 * Every message send() accepted arrives whole and in order, but the
	 * one TCP had no room for at close(); then the end of the stream.
	 */
	for (;;) {
		n = read_frame(self->raw, msg, sizeof(msg));
		if (n < 0)
			break;
		ASSERT_EQ(sizeof(msg), n);
		ASSERT_EQ(0, check_fill(msg + 6, 1000, got)) TH_LOG("frame %d", got);
		got++;
	}
	ASSERT_LE(sent - 1, got) TH_LOG("%d of %d messages arrived", got, sent);
	ASSERT_GE(sent, got);
	/* read_frame() stopped at a partial frame or the FIN, not a reset. */
	do {
		n = recv(self->raw, msg, sizeof(msg), MSG_DONTWAIT);
	} while (n > 0);
	ASSERT_EQ(0, n) TH_LOG("recv: %s", strerror(errno));
}

static uint64_t wait_counter_above(const char *name, uint64_t before)
{
	uint64_t v = read_xfrm_counter(name);

	/* Delivered through a softirq queue: poll for the counter. */
	for (int i = 0; i < WAIT_MS / 10 && v <= before; i++) {
		usleep(10000);
		v = read_xfrm_counter(name);
	}
	return v;
}

/* A connected socket's addresses as text, and its ports. */
static void sock_addrs(int fd, char *local, uint16_t *lport, char *peer,
		       uint16_t *pport)
{
	struct sockaddr_storage a;
	socklen_t len;
	int i;

	for (i = 0; i < 2; i++) {
		struct sockaddr_in6 *a6 = (void *)&a;
		struct sockaddr_in *a4 = (void *)&a;

		len = sizeof(a);
		if (i ? getpeername(fd, (void *)&a, &len) :
			getsockname(fd, (void *)&a, &len))
			memset(&a, 0, sizeof(a));
		inet_ntop(a.ss_family,
			  a.ss_family == AF_INET6 ? (void *)&a6->sin6_addr :
						    (void *)&a4->sin_addr,
			  i ? peer : local, INET6_ADDRSTRLEN);
		*(i ? pport : lport) = ntohs(a.ss_family == AF_INET6 ?
					     a6->sin6_port : a4->sin_port);
	}
}

static const char sa_plain_esp[] =
	"mode transport aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128";

TEST_F_TIMEOUT(ulp, esp_goes_to_xfrm, 300)
{
	const char *esp = self->t.family == AF_INET ? "esp4" : "esp6";
	char local[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN], cmd[512];
	uint8_t frm[2 + 4 + 28], out[16];
	uint16_t lport, pport;
	uint64_t before;

	/*
	 * XFRM needs an ESP type to look SAs up. Until ours is loaded, borrow
	 * the stock one for this test and remove it again.
	 */
	if (!module_loaded(esp)) {
		snprintf(cmd, sizeof(cmd), "modprobe %s", esp);
		ASSERT_EQ(0, run(cmd));
		self->borrowed_esp = esp;
	}

	/* Unknown SPI: dropped by XFRM and counted. */
	before = read_xfrm_counter("XfrmInNoStates");
	frame(frm, 0x0badc0de, "0123456789abcdef0123456789ab", 28);
	ASSERT_EQ(0, write_all(self->raw, frm, sizeof(frm)));
	send_ike(_metadata, self->raw, "after", 5);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	ASSERT_EQ(9, recv(self->ulp, out, sizeof(out), 0));
	ASSERT_LT(before, wait_counter_above("XfrmInNoStates", before));

	/*
	 * An SA for that SPI from the peer to us, but without TCP
	 * encapsulation: XFRM finds it by SPI and destination address and
	 * refuses it for the encapsulation type the stream delivers.
	 */
	sock_addrs(self->ulp, local, &lport, peer, &pport);
	snprintf(cmd, sizeof(cmd),
		 "ip xfrm state add src %s dst %s proto esp spi 0x0badc0de %s",
		 peer, local, sa_plain_esp);
	ASSERT_EQ(0, run(cmd));
	before = read_xfrm_counter("XfrmInStateMismatch");
	ASSERT_EQ(0, write_all(self->raw, frm, sizeof(frm)));
	ASSERT_LT(before, wait_counter_above("XfrmInStateMismatch", before));
	/* Both frames went to XFRM, which dropped them: not the ULP. */
	ASSERT_EQ(2, wait_diag(self->ulp, "esp_rx", 2));
	ASSERT_EQ(0, diag_counter(self->ulp, "esp_rx_drops"));
	ASSERT_EQ(0, diag_counter(self->ulp, "bad_rx"));
	ASSERT_EQ(0, run("ip xfrm state flush"));
	if (self->borrowed_esp) {
		return_esp(esp);
		self->borrowed_esp = NULL;
		ASSERT_FALSE(module_loaded(esp));
	}
}

/*
 * References on a module other than those of modules using its symbols
 * (esp4, esp6 and the injector hold espintcp that way), or -1.
 */
static int module_own_refs(const char *name)
{
	char path[128];
	int refcnt = -1, holders = 0;
	FILE *f;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/module/%s/refcnt", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &refcnt) != 1)
		refcnt = -1;
	fclose(f);
	snprintf(path, sizeof(path), "/sys/module/%s/holders", name);
	d = opendir(path);
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.')
			holders++;
	closedir(d);
	return refcnt < 0 ? -1 : refcnt - holders;
}

TEST_F(ulp, module_busy_while_in_use)
{
	int with, without = -1;

	/* A socket with the ULP pins the module, until it is destroyed. */
	with = module_own_refs("espintcp");
	ASSERT_LE(1, with);
	close(self->ulp);
	self->ulp = -1;
	close(self->raw);
	self->raw = -1;
	for (int i = 0; i < WAIT_MS / 10; i++) {
		without = module_own_refs("espintcp");
		if (without < with)
			break;
		usleep(10000);
	}
	ASSERT_LE(0, without);
	ASSERT_GT(with, without) TH_LOG("%d references with the socket, %d after",
					with, without);
}

TEST_F(ulp, diag_shows_ulp_and_counters)
{
	char cmd[256], line[512] = "";
	uint16_t port;
	FILE *f;

	send_ike(_metadata, self->raw, "count-me", 8);
	ASSERT_TRUE(readable(self->ulp, WAIT_MS));
	port = ntohs(self->t.family == AF_INET ?
		     ((struct sockaddr_in *)&self->t.srv)->sin_port :
		     ((struct sockaddr_in6 *)&self->t.srv)->sin6_port);

	snprintf(cmd, sizeof(cmd), "ss -tiH state established '( sport = :%u )'",
		 port);
	f = popen(cmd, "r");
	ASSERT_NE(NULL, f);
	while (fgets(line, sizeof(line), f) && !strstr(line, "tcp-ulp-espintcp"))
		;
	pclose(f);
	ASSERT_NE(NULL, strstr(line, "tcp-ulp-espintcp"));

	snprintf(cmd, sizeof(cmd), "./espintcp_diag %u", port);
	f = popen(cmd, "r");
	ASSERT_NE(NULL, f);
	ASSERT_NE(NULL, fgets(line, sizeof(line), f));
	pclose(f);
	ASSERT_NE(NULL, strstr(line, "ike_rx=1 ")) TH_LOG("%s", line);
	ASSERT_NE(NULL, strstr(line, "ike_rxq=1")) TH_LOG("%s", line);
}

/*
 * ESP transmit, driven by the espintcp_inject test module: it finds the
 * socket by its 4-tuple as an SA would and sends from a softirq hrtimer.
 */
#define INJECT_DIR	"/sys/kernel/debug/espintcp_inject/"
#define INJECT_SPI	0x45535000

struct inject_status {
	int sent, ok, enobufs, enotconn, other, done;
};

static int inject_ctl(const char *cmd)
{
	int fd = open(INJECT_DIR "ctl", O_WRONLY), ret;

	if (fd < 0)
		return -1;
	ret = write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd) ? 0 : -1;
	close(fd);
	return ret;
}

static int inject_status(struct inject_status *st)
{
	FILE *f = fopen(INJECT_DIR "status", "r");
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "sent=%d ok=%d enobufs=%d enotconn=%d other=%d done=%d",
		   &st->sent, &st->ok, &st->enobufs, &st->enotconn,
		   &st->other, &st->done);
	fclose(f);
	return n == 6 ? 0 : -1;
}

static int inject_loaded(void)
{
	if (module_loaded("espintcp_inject"))
		return 1;
	return run("insmod inject/espintcp_inject.ko") == 0;
}

/*
 * Start injecting ESP into the ULP socket's connection: @count packets (0:
 * until stopped) of @size bytes, a batch of them every @tick_us.
 */
static int inject_start_every(int ulp, int count, int size, int tick_us)
{
	char ls[INET6_ADDRSTRLEN], rs[INET6_ADDRSTRLEN], cmd[256];
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);
	uint16_t lp, rp;

	if (getsockname(ulp, (void *)&a, &len))
		return -1;
	sock_addrs(ulp, ls, &lp, rs, &rp);
	snprintf(cmd, sizeof(cmd), "start %d %s %u %s %u %d %d %d",
		 a.ss_family, ls, lp, rs, rp, count, size, tick_us);
	return inject_ctl(cmd);
}

/* As fast as the injector goes. */
static int inject_start(int ulp, int count, int size)
{
	return inject_start_every(ulp, count, size, 20);
}

static int wait_inject_done(struct inject_status *st)
{
	for (int i = 0; i < WAIT_MS / 10; i++) {
		if (inject_status(st))
			return -1;
		if (st->done)
			return 0;
		usleep(10000);
	}
	return -1;
}

/* A frame is ESP from the injector (1), IKE (0), or broken (-1). */
static int frame_kind(const uint8_t *buf, int len, uint32_t *seq)
{
	uint32_t spi;

	if (len < 6)
		return -1;
	memcpy(&spi, buf + 2, 4);
	if (!spi)
		return 0;
	if (ntohl(spi) != INJECT_SPI || len < 10)
		return -1;
	memcpy(seq, buf + 6, 4);
	*seq = ntohl(*seq);
	return 1;
}

/* Read @count frames of @size bytes: the injector's ESP numbered 0, 1, ...
 * Returns how many were so, in order, before anything else.
 */
static int read_injected(int fd, int count, int size)
{
	static uint8_t buf[65535];	/* any frame */
	uint32_t seq;
	int i;

	for (i = 0; i < count; i++)
		if (read_frame(fd, buf, sizeof(buf)) != size ||
		    frame_kind(buf, size, &seq) != 1 || seq != (uint32_t)i)
			break;
	return i;
}

/* Read the raw side while the injector runs, until it has queued more than
 * @n packets: 0, or -1 when that did not happen within WAIT_MS.
 */
static int read_while_injecting(int raw, int n, struct inject_status *st)
{
	static uint8_t buf[2048];

	for (int i = 0; i < WAIT_MS / 10; i++) {
		if (inject_status(st))
			return -1;
		if (st->ok > n)
			return 0;
		if (readable(raw, 10))
			read_frame(raw, buf, sizeof(buf));
	}
	return -1;
}

TEST_F_TIMEOUT(ulp, esp_xmit_from_softirq, 300)
{
	struct inject_status st;
	static uint8_t buf[2048];
	int got = 0, last = -1;

	ASSERT_TRUE(inject_loaded());
	ASSERT_EQ(0, inject_start(self->ulp, 2000, 300));
	ASSERT_EQ(0, wait_inject_done(&st));
	ASSERT_EQ(2000, st.ok + st.enobufs);
	ASSERT_EQ(0, st.other + st.enotconn);
	/* Every accepted packet arrives whole and in order. */
	while (got < st.ok) {
		uint32_t seq;

		ASSERT_EQ(300, read_frame(self->raw, buf, sizeof(buf)));
		ASSERT_EQ(1, frame_kind(buf, 300, &seq));
		ASSERT_LT(last, (int)seq);
		last = seq;
		got++;
	}
	ASSERT_EQ(0, inject_ctl("stop"));
	/* Counted once TCP took them, which may be after the peer read them. */
	ASSERT_EQ(st.ok, wait_diag(self->ulp, "esp_tx", st.ok));
	ASSERT_EQ(st.enobufs, diag_counter(self->ulp, "esp_tx_drops"));
	ASSERT_EQ(0, diag_counter(self->ulp, "esp_txq"));
}

/* A thread's state letter from /proc (S sleeping, R, D, ...), '?' if gone. */
static char thread_state(pid_t tid)
{
	char path[64], stat[256], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	p = fgets(stat, sizeof(stat), f);
	fclose(f);
	p = p ? strrchr(stat, ')') : NULL;
	return p && p[1] == ' ' ? p[2] : '?';
}

struct ike_sender {
	int fd;
	pid_t tid;
	int ret;
	int done;
};

static void *ike_sender_thread(void *arg)
{
	struct ike_sender *s = arg;
	uint8_t msg[4 + 64] = { 0 };

	__atomic_store_n(&s->tid, syscall(SYS_gettid), __ATOMIC_RELEASE);
	if (send(s->fd, msg, sizeof(msg), 0) != sizeof(msg))
		s->ret = -1;
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Every sender waits in send(), or already got its message out: TCP may
 * still have had room for one when it came, as ACKs for what filled the
 * stream were arriving.
 */
static bool all_sleeping(struct ike_sender *snd, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		pid_t tid = __atomic_load_n(&snd[i].tid, __ATOMIC_ACQUIRE);

		if (__atomic_load_n(&snd[i].done, __ATOMIC_ACQUIRE))
			continue;
		if (!tid || thread_state(tid) != 'S')
			return false;
	}
	return true;
}

TEST_F_TIMEOUT(ulp, ike_and_esp_take_turns, 300)
{
	enum { SENDERS = 6 };
	struct ike_sender snd[SENDERS];
	struct inject_status st, st2;
	static uint8_t buf[4096];
	pthread_t th[SENDERS];
	int i, esp = 0, ike = 0, after_last_ike = 0, prev_ike = 0;
	int sndbuf = 1 << 20;
	long long queued;

	/* The peer does not read: ESP fills TCP and then the ESP queue, which
	 * holds as many bytes as the send buffer: a fixed one (wmem_max caps
	 * the request) holds far more than 64 of these packets.
	 */
	ASSERT_EQ(0, setsockopt(self->ulp, SOL_SOCKET, SO_SNDBUF, &sndbuf,
				sizeof(sndbuf)));
	ASSERT_TRUE(inject_loaded());
	ASSERT_EQ(0, inject_start(self->ulp, 20000, 1000));
	ASSERT_EQ(0, wait_inject_done(&st));
	ASSERT_LT(0, st.enobufs) TH_LOG("the ESP queue never filled");

	/* IKE senders, one message each, all waiting for the slot. */
	for (i = 0; i < SENDERS; i++) {
		snd[i] = (struct ike_sender){ .fd = self->ulp };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, ike_sender_thread,
					    &snd[i]));
	}
	for (i = 0; i < WAIT_MS / 10 && !all_sleeping(snd, SENDERS); i++)
		usleep(10000);
	for (i = 0; i < SENDERS && !all_sleeping(snd, SENDERS); i++)
		TH_LOG("sender %d: tid %d, state %c, done %d", i, snd[i].tid,
		       snd[i].tid ? thread_state(snd[i].tid) : '-',
		       __atomic_load_n(&snd[i].done, __ATOMIC_ACQUIRE));
	ASSERT_TRUE(all_sleeping(snd, SENDERS));

	/* Fill the ESP queue again behind the waiting senders: a queue that
	 * overflowed during the first injection does not stay full while TCP
	 * still takes data (on 6.12's debug kernel only 58 packets were left
	 * behind the last IKE message). From here on nothing leaves the
	 * queue but one packet after each IKE message, and one for a sender
	 * that got through before the others waited: the rest must come
	 * after the last IKE message.
	 */
	ASSERT_EQ(0, inject_start(self->ulp, 20000, 1000));
	ASSERT_EQ(0, wait_inject_done(&st2));
	ASSERT_LT(0, st2.enobufs) TH_LOG("the ESP queue did not fill again");
	queued = diag_counter(self->ulp, "esp_txq");
	ASSERT_LT(64, queued);

	/* Drain: IKE jumps the ESP queue, ESP goes between IKE messages. */
	while (ike < SENDERS || esp < st.ok + st2.ok) {
		int n = read_frame(self->raw, buf, sizeof(buf));
		uint32_t seq;
		int kind = frame_kind(buf, n, &seq);

		ASSERT_LE(0, kind) TH_LOG("broken frame after %d ESP, %d IKE",
					  esp, ike);
		if (kind == 0) {
			ASSERT_FALSE(prev_ike && esp < st.ok + st2.ok)
				TH_LOG("IKE after IKE with ESP waiting");
			ike++;
			after_last_ike = 0;
		} else {
			esp++;
			after_last_ike++;
		}
		prev_ike = kind == 0;
	}
	for (i = 0; i < SENDERS; i++) {
		pthread_join(th[i], NULL);
		ASSERT_EQ(0, snd[i].ret);
	}
	ASSERT_LE(queued - SENDERS - 1, after_last_ike)
		TH_LOG("%lld ESP packets queued behind the IKE senders", queued);
	ASSERT_EQ(0, inject_ctl("stop"));
}

TEST_F_TIMEOUT(ulp, close_races_esp_output, 300)
{
	struct inject_status st;
	static uint8_t buf[2048];
	int i;

	/* Inject until told to stop, from softirq, while the tx work runs. */
	ASSERT_TRUE(inject_loaded());
	ASSERT_EQ(0, inject_start(self->ulp, 0, 500));
	if (read_while_injecting(self->raw, 100, &st))
		TH_LOG("injector sent %d ok %d enobufs %d; esp_tx %lld esp_txq %lld tx_work %lld",
		       st.sent, st.ok, st.enobufs,
		       diag_counter(self->ulp, "esp_tx"),
		       diag_counter(self->ulp, "esp_txq"),
		       diag_counter(self->ulp, "tx_work"));
	close(self->ulp);
	self->ulp = -1;
	/* Output after close is refused, the context outliving its socket. */
	for (i = 0; i < WAIT_MS / 10; i++) {
		ASSERT_EQ(0, inject_status(&st));
		if (st.enotconn > 100)
			break;
		usleep(10000);
	}
	ASSERT_EQ(0, inject_ctl("stop"));
	ASSERT_LT(100, st.enotconn);
	ASSERT_EQ(0, st.other);
	/* The stream ends with whole frames. */
	for (;;) {
		uint32_t seq;
		int n;

		ASSERT_TRUE(readable(self->raw, WAIT_MS))
			TH_LOG("no end of stream");
		n = read_frame(self->raw, buf, sizeof(buf));
		if (n < 0)
			break;
		ASSERT_EQ(1, frame_kind(buf, n, &seq));
	}
}

struct esp_reader {
	int fd;
	int stop;
	int frames;
	int bad;
	/* The first bad frame: its length and start. */
	int bad_len;
	uint8_t bad_bytes[12];
};

/*
 * Read exactly @len bytes, however long it takes: on a debug kernel under
 * TCG the injector's softirq can hold up loopback for longer than WAIT_MS
 * (RTTs of seconds, an RTO of 28 s seen). -1 once told to stop, at
 * the end of the stream or on an error.
 */
static int esp_reader_read(struct esp_reader *r, uint8_t *p, size_t len)
{
	while (len) {
		struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
		ssize_t n;

		if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
			return -1;
		/* Bounded, to see the stop flag. */
		if (poll(&pfd, 1, 100) != 1)
			continue;
		n = read(r->fd, p, len);
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* Read the raw side's stream until told to stop; every frame is ESP. */
static void *esp_reader_thread(void *arg)
{
	struct esp_reader *r = arg;
	static uint8_t buf[2048];

	while (!esp_reader_read(r, buf, 2)) {
		size_t len = buf[0] << 8 | buf[1];
		uint32_t seq;

		if (len >= 2 && len <= sizeof(buf) &&
		    esp_reader_read(r, buf + 2, len - 2))
			break;
		if (len < 2 || len > sizeof(buf) ||
		    frame_kind(buf, len, &seq) != 1) {
			r->bad_len = len;
			memcpy(r->bad_bytes, buf, sizeof(r->bad_bytes));
			__atomic_store_n(&r->bad, 1, __ATOMIC_RELEASE);
			break;
		}
		__atomic_add_fetch(&r->frames, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

struct lock_user {
	int fd;
	int calls;
	int err;
	int done;
};

#define LOCK_USER_CALLS	20

/* setsockopt(TCP_NODELAY) takes the socket lock each time. */
static void *lock_user_thread(void *arg)
{
	struct lock_user *u = arg;
	int one = 1;

	for (int i = 0; i < LOCK_USER_CALLS; i++) {
		if (setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one,
			       sizeof(one))) {
			u->err = errno;
			break;
		}
		__atomic_add_fetch(&u->calls, 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&u->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Where the ESP stream stands, for a failure's log. */
static void esp_flow_report(struct __test_metadata *_metadata, int ulp,
			    const struct esp_reader *r)
{
	struct inject_status st = { 0 };

	inject_status(&st);
	TH_LOG("%d frames read; injector sent %d ok %d enobufs %d",
	       __atomic_load_n(&r->frames, __ATOMIC_ACQUIRE), st.sent, st.ok,
	       st.enobufs);
	TH_LOG("esp_tx %lld esp_txq %lld tx_work %lld",
	       diag_counter(ulp, "esp_tx"), diag_counter(ulp, "esp_txq"),
	       diag_counter(ulp, "tx_work"));
	run("ss -tnie >&2; grep '^cpu' /proc/stat >&2");
}

/*
 * The tx work holds the socket lock while it moves ESP into TCP, and a peer
 * that keeps reading keeps it busy for as long as ESP comes. Everyone else
 * who takes the socket lock (setsockopt() here; close(), getsockopt(), the
 * parser's work) must still get a turn: on a 6.12 debug kernel under TCG,
 * the work once kept close() waiting for twenty minutes.
 */
TEST_F_TIMEOUT(ulp, socket_lock_not_starved_by_esp, 300)
{
	/* Static: a failed assertion leaves the threads running. */
	static struct esp_reader r;
	static struct lock_user u;
	struct inject_status st;
	pthread_t rt, ut;
	int i;

	r = (struct esp_reader){ .fd = self->raw };
	u = (struct lock_user){ .fd = self->ulp };
	ASSERT_TRUE(inject_loaded());
	/* A batch per millisecond: flat out, the injector's softirq takes
	 * most of a debug kernel under TCG, and the threads would starve of
	 * CPU rather than of the lock.
	 */
	ASSERT_EQ(0, inject_start_every(self->ulp, 0, 500, 1000));
	ASSERT_EQ(0, pthread_create(&rt, NULL, esp_reader_thread, &r));
	/* ESP flows, and the tx work has plenty to do. */
	for (i = 0; i < WAIT_MS / 10; i++) {
		ASSERT_EQ(0, inject_status(&st));
		if (st.ok >= 100 && __atomic_load_n(&r.frames, __ATOMIC_ACQUIRE))
			break;
		usleep(10000);
	}
	ASSERT_LE(100, st.ok);
	ASSERT_LT(0, __atomic_load_n(&r.frames, __ATOMIC_ACQUIRE));

	ASSERT_EQ(0, pthread_create(&ut, NULL, lock_user_thread, &u));
	for (i = 0; i < WAIT_MS / 10; i++) {
		if (__atomic_load_n(&u.done, __ATOMIC_ACQUIRE))
			break;
		usleep(10000);
	}
	if (!__atomic_load_n(&u.done, __ATOMIC_ACQUIRE)) {
		TH_LOG("%d of %d calls done",
		       __atomic_load_n(&u.calls, __ATOMIC_ACQUIRE),
		       LOCK_USER_CALLS);
		esp_flow_report(_metadata, self->ulp, &r);
	}
	ASSERT_TRUE(__atomic_load_n(&u.done, __ATOMIC_ACQUIRE));
	ASSERT_EQ(0, pthread_join(ut, NULL));
	ASSERT_EQ(0, u.err);
	ASSERT_EQ(LOCK_USER_CALLS, u.calls);

	/* Every frame the reader saw whole was ESP from the injector. */
	ASSERT_EQ(0, inject_ctl("stop"));
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	ASSERT_EQ(0, pthread_join(rt, NULL));
	if (r.bad) {
		char hex[2 * sizeof(r.bad_bytes) + 1];

		for (i = 0; i < (int)sizeof(r.bad_bytes); i++)
			sprintf(hex + 2 * i, "%02x", r.bad_bytes[i]);
		TH_LOG("bad frame after %d: length %d, starts %s", r.frames,
		       r.bad_len, hex);
	}
	ASSERT_FALSE(r.bad);
	ASSERT_EQ(0, inject_status(&st));
	ASSERT_EQ(0, st.other + st.enotconn);
}

/*
 * After the peer reset the connection, ESP output keeps the tx work
 * busy on the dead connection; the socket must still report the reset
 * (POLLERR, ECONNRESET) to the user, not end of stream or EPIPE.
 */
static void reset_under_esp_output(struct __test_metadata *_metadata,
				   int *raw, int ulp, bool by_send)
{
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };
	struct pollfd pfd = { .fd = ulp, .events = POLLIN };
	struct inject_status st;
	static uint8_t buf[2048];
	int i, ok0;

	ASSERT_TRUE(inject_loaded());
	/*
	 * Not flat out: under single-threaded TCG (6.12) a batch every
	 * 20 us kept the injector's vCPU in softirq, and the peer's reset
	 * took more than 20 s to close the socket. A batch per millisecond
	 * still keeps the tx work running on the dead connection.
	 */
	ASSERT_EQ(0, inject_start_every(ulp, 0, 200, 1000));
	ASSERT_EQ(0, read_while_injecting(*raw, 50, &st));

	ASSERT_EQ(0, setsockopt(*raw, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)));
	close(*raw);
	*raw = -1;
	/* The reset arrived: the connection is closed for good. */
	for (i = 0; i < WAIT_MS / 10; i++) {
		ASSERT_LE(0, poll(&pfd, 1, 10));
		if (pfd.revents & POLLHUP)
			break;
	}
	if (!(pfd.revents & POLLHUP)) {
		struct tcp_info ti = { 0 };
		socklen_t tl = sizeof(ti);

		/* Seen twice on a slow host: say where the reset went. */
		getsockopt(ulp, IPPROTO_TCP, TCP_INFO, &ti, &tl);
		TH_LOG("no POLLHUP: revents %#x, tcp state %u", pfd.revents,
		       ti.tcpi_state);
		run("nstat -az '*Rst*' '*Challenge*' '*BacklogDrop' >&2; ss -tnie >&2");
	}
	ASSERT_TRUE(pfd.revents & POLLHUP);

	/*
	 * More ESP than the queue holds is accepted after the reset: the tx
	 * work ran on the dead connection, again and again.
	 */
	ASSERT_EQ(0, inject_status(&st));
	ok0 = st.ok;
	for (i = 0; i < WAIT_MS / 10 && st.ok < ok0 + 3 * 128; i++) {
		usleep(10000);
		ASSERT_EQ(0, inject_status(&st));
	}
	ASSERT_EQ(0, inject_ctl("stop"));
	ASSERT_LE(ok0 + 3 * 128, st.ok);

	pfd.events = POLLIN | POLLOUT;
	ASSERT_EQ(1, poll(&pfd, 1, 0));
	ASSERT_TRUE(pfd.revents & POLLERR) TH_LOG("revents %#x", pfd.revents);
	if (by_send) {
		uint8_t msg[8] = { 0 };

		ASSERT_EQ(-1, send(ulp, msg, sizeof(msg), 0));
	} else {
		ASSERT_EQ(-1, recv(ulp, buf, sizeof(buf), 0));
	}
	ASSERT_EQ(ECONNRESET, errno) TH_LOG("%s", strerror(errno));
}

TEST_F_TIMEOUT(ulp, reset_reported_to_recv_after_esp, 300)
{
	reset_under_esp_output(_metadata, &self->raw, self->ulp, false);
}

TEST_F_TIMEOUT(ulp, reset_reported_to_send_after_esp, 300)
{
	reset_under_esp_output(_metadata, &self->raw, self->ulp, true);
}

/*
 * After a reset, the tx work drops whatever ESP XFRM still sends through the
 * socket, and that may come as fast as it is dropped. The work must drop
 * what it finds and let go of the socket lock, not empty the queue until it
 * stays empty: on a 6.12 debug kernel under TCG it once held the lock and
 * its CPU for minutes (a soft lockup), with close() waiting behind it.
 */
TEST_F_TIMEOUT(ulp, esp_on_reset_connection_lets_lock_users_in, 300)
{
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };
	struct pollfd pfd = { .fd = self->ulp, .events = POLLIN };
	/* Static: a failed assertion leaves the thread running. */
	static struct lock_user u;
	struct inject_status st;
	bool done = false;
	pthread_t ut;
	int i, ok0;

	u = (struct lock_user){ .fd = self->ulp };
	ASSERT_TRUE(inject_loaded());
	/* Flat out, while the connection still has its addresses. */
	ASSERT_EQ(0, inject_start(self->ulp, 0, 200));
	ASSERT_EQ(0, read_while_injecting(self->raw, 50, &st));

	ASSERT_EQ(0, setsockopt(self->raw, SOL_SOCKET, SO_LINGER, &lin,
				sizeof(lin)));
	close(self->raw);
	self->raw = -1;
	for (i = 0; i < WAIT_MS / 10; i++) {
		ASSERT_LE(0, poll(&pfd, 1, 10));
		if (pfd.revents & POLLHUP)
			break;
	}
	ASSERT_TRUE(pfd.revents & POLLHUP);

	/* ESP keeps coming, and the tx work keeps dropping it. */
	ASSERT_EQ(0, inject_status(&st));
	ok0 = st.ok;
	for (i = 0; i < WAIT_MS / 10 && st.ok < ok0 + 1000; i++) {
		usleep(10000);
		ASSERT_EQ(0, inject_status(&st));
	}
	ASSERT_LE(ok0 + 1000, st.ok);

	/* The lock is taken in turns with it, while ESP still comes. */
	ASSERT_EQ(0, pthread_create(&ut, NULL, lock_user_thread, &u));
	for (i = 0; i < WAIT_MS / 10 && !done; i++) {
		usleep(10000);
		done = __atomic_load_n(&u.done, __ATOMIC_ACQUIRE);
	}
	if (!done)
		TH_LOG("%d of %d calls done with ESP coming; esp_txq %lld",
		       __atomic_load_n(&u.calls, __ATOMIC_ACQUIRE),
		       LOCK_USER_CALLS, diag_counter(self->ulp, "esp_txq"));
	/* Stopped first: the calls can finish, the thread can be joined. */
	ASSERT_EQ(0, inject_ctl("stop"));
	ASSERT_EQ(0, pthread_join(ut, NULL));
	ASSERT_TRUE(done);
	ASSERT_EQ(0, u.err);
	ASSERT_EQ(LOCK_USER_CALLS, u.calls);
}

/*
 * A kprobe on strparser's work function, where it parses what arrived while
 * the socket lock was owned; in tracefs, if the kernel has it.
 */
#define KPROBE_DIR	"/sys/kernel/debug/tracing/"

static int kprobe_set(const char *def, const char *enable, const char *val)
{
	int fd;
	bool ok;

	if (def) {
		fd = open(KPROBE_DIR "kprobe_events", O_WRONLY | O_APPEND);
		if (fd < 0)
			return -1;
		ok = write(fd, def, strlen(def)) == (ssize_t)strlen(def);
		close(fd);
		if (!ok)
			return -1;
	}
	if (enable) {
		fd = open(enable, O_WRONLY);
		if (fd < 0)
			return -1;
		ok = write(fd, val, 1) == 1;
		close(fd);
		if (!ok)
			return -1;
	}
	return 0;
}

static long kprobe_hits(const char *name)
{
	char line[256], ev[128];
	unsigned long hits, misses;
	long ret = -1;
	FILE *f = fopen(KPROBE_DIR "kprobe_profile", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %lu %lu", ev, &hits, &misses) == 3 &&
		    !strcmp(ev, name))
			ret = hits;
	fclose(f);
	return ret;
}

struct ike_drain {
	int fd, frames;
};

static void *ike_drain_thread(void *arg)
{
	struct ike_drain *d = arg;
	static uint8_t buf[4096];

	while (read_frame(d->fd, buf, sizeof(buf)) > 0)
		d->frames++;
	return NULL;
}

/*
 * Two-way traffic: while a sender owns the socket, arriving ESP waits in
 * the TCP backlog and strparser parses it from its work item, in process
 * context. On a PROVE_RCU/lockdep kernel this checks the RCU and BH
 * context of ESP delivery; here, that every ESP frame still reaches XFRM.
 */
TEST_F_TIMEOUT(ulp, esp_parsed_while_socket_owned, 300)
{
	enum { ESP = 500, ROUNDS = 20 };
	static const char ename[] = "espintcp_test_strp";
	static uint8_t frames[ESP * 38];
	struct ike_drain drain = { .fd = self->raw };
	char def[128], enable[128];
	pthread_t ts, td;
	uint64_t before, now = 0;
	long hits0, hits1 = -1;
	int i, round;
	size_t n = 0;
	void *ret;

	snprintf(def, sizeof(def), "p:%s strp_work\n", ename);
	snprintf(enable, sizeof(enable), KPROBE_DIR "events/kprobes/%s/enable",
		 ename);
	if (kprobe_set(def, enable, "1"))
		TH_LOG("no kprobe on strp_work: not checking the path taken");
	hits0 = kprobe_hits(ename);

	for (i = 0; i < ESP; i++) {
		uint8_t body[32];

		fill(body, sizeof(body), i);
		n += frame(frames + n, 0x0badc0de, body, sizeof(body));
	}
	ASSERT_EQ(0, pthread_create(&td, NULL, ike_drain_thread, &drain));
	/* Until the race was won at least once: ESP arriving while the
	 * sender owns the socket lock (a loaded or single-threaded TCG host
	 * may take a few rounds).
	 */
	for (round = 0; round < ROUNDS; round++) {
		struct sender snd = { .fd = self->ulp, .id = 1 + round,
				      .count = ESP };

		before = read_xfrm_counter("XfrmInNoStates");
		ASSERT_EQ(0, pthread_create(&ts, NULL, sender_thread, &snd));
		/* ESP in small writes, interleaved with the IKE going out. */
		for (i = 0; i < ESP; i++)
			ASSERT_EQ(0, write_all(self->raw, frames + i * 38, 38));
		pthread_join(ts, &ret);
		ASSERT_EQ(NULL, ret);

		ASSERT_EQ(ESP * (round + 1),
			  wait_diag(self->ulp, "esp_rx", ESP * (round + 1)));
		for (i = 0; i < WAIT_MS / 10; i++) {
			now = read_xfrm_counter("XfrmInNoStates");
			if (now - before >= ESP)
				break;
			usleep(10000);
		}
		ASSERT_EQ(ESP, now - before);
		ASSERT_EQ(0, diag_counter(self->ulp, "esp_rx_drops"));

		hits1 = kprobe_hits(ename);
		if (hits0 < 0 || hits1 < 0 || hits1 > hits0)
			break;
	}
	kprobe_set(NULL, enable, "0");
	snprintf(def, sizeof(def), "-:%s\n", ename);
	kprobe_set(def, NULL, NULL);
	TH_LOG("strparser work ran %ld times in %d rounds", hits1 - hits0,
	       round + 1);
	if (hits0 >= 0 && hits1 >= 0)
		ASSERT_LT(hits0, hits1);

	shutdown(self->ulp, SHUT_WR);
	pthread_join(td, NULL);
	ASSERT_EQ(ESP * (round < ROUNDS ? round + 1 : ROUNDS), drain.frames);
}

/*
 * TCP may refuse a send with nothing of the socket in flight: then it calls
 * sk_write_space() on the way out, for edge-triggered pollers, and no ACK
 * will call it again. The tx work must try again later, not reschedule
 * itself at once, forever; and send everything once TCP takes data again.
 *
 * Global memory pressure (net.ipv4.tcp_mem) rarely gets there on 6.1: TCP
 * lets a socket with nothing queued charge its first skb regardless. A
 * zero net.ipv4.tcp_notsent_lowat always does: every send is refused.
 */
#define NOTSENT_LOWAT "/proc/sys/net/ipv4/tcp_notsent_lowat"

static int sysctl_rw(const char *path, const char *val, char *old, size_t len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC), ret = 0;
	ssize_t n;

	if (fd < 0)
		return -1;
	if (old) {
		n = read(fd, old, len - 1);
		old[n > 0 ? n : 0] = 0;
		if (n <= 0)
			ret = -1;
	}
	if (val && write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		ret = -1;
	close(fd);
	return ret;
}

/*
 * Runs of the tx work per second, over a window of at least a second that
 * spans both readings: the counters come from a helper process, which a
 * loaded host (a debug kernel under TCG) may take seconds to run, and the
 * window then grows with it; the rate can only read low, never high. A
 * tx work that reschedules itself at once runs thousands of times a
 * second, one that waits for its retry interval (ESPINTCP_TX_RETRY) 10.
 * -1 if a counter could not be read.
 */
static double tx_work_rate(int fd, long long *runs)
{
	long long t0 = now_ms(), w0 = diag_counter(fd, "tx_work"), w1;

	usleep(1000000);
	w1 = diag_counter(fd, "tx_work");
	if (w0 < 0 || w1 < 0)
		return -1;
	*runs = w1 - w0;
	return *runs * 1000.0 / (now_ms() - t0);
}

TEST_F_TIMEOUT(ulp, tx_work_backs_off_when_tcp_refuses, 300)
{
	enum { COUNT = 20, SIZE = 200 };
	struct inject_status st;
	long long runs = 0, txq;
	char saved[64];
	double rate;

	ASSERT_TRUE(inject_loaded());
	/* In this namespace only: the veth peer is unaffected, and the
	 * loopback peer only reads.
	 */
	ASSERT_EQ(0, sysctl_rw(NOTSENT_LOWAT, NULL, saved, sizeof(saved)));
	ASSERT_EQ(0, sysctl_rw(NOTSENT_LOWAT, "0", NULL, 0));

	ASSERT_EQ(0, inject_start(self->ulp, COUNT, SIZE));
	ASSERT_EQ(0, wait_inject_done(&st));
	ASSERT_EQ(COUNT, st.ok);
	/* A window to count runs in, not a synchronisation. */
	rate = tx_work_rate(self->ulp, &runs);
	txq = diag_counter(self->ulp, "esp_txq");
	ASSERT_EQ(0, sysctl_rw(NOTSENT_LOWAT, saved, NULL, 0));
	TH_LOG("tx work ran %lld times, %.1f a second; %lld ESP packets waiting",
	       runs, rate, txq);
	ASSERT_LE(0, rate);
	/* Every packet still waits: TCP refused them all. */
	ASSERT_EQ(COUNT - 1, txq);
	ASSERT_GT(50, rate);

	/* TCP takes data again: everything goes out, in order. */
	ASSERT_EQ(COUNT, read_injected(self->raw, COUNT, SIZE));
	ASSERT_EQ(0, inject_ctl("stop"));
}

/*
 * Global TCP memory pressure: net.ipv4.tcp_mem at one page, with a
 * connection nobody reads as ballast. The tx work must not spin, and
 * everything goes out once the pressure is gone.
 */
TEST_F_TIMEOUT(ulp, tx_work_under_memory_pressure, 300)
{
	enum { COUNT = 20, SIZE = 200 };
	struct sockaddr_storage a = self->t.srv;
	socklen_t alen = self->t.len;
	static uint8_t chunk[65536];
	struct inject_status st;
	long long runs = 0, txq;
	int lsn, wr, rd, i;
	double rate;
	size_t ballast = 0;
	ssize_t n;

	/* Ballast: TCP memory held by a connection nobody reads. */
	((struct sockaddr_in *)&a)->sin_port = 0;
	lsn = socket(self->t.family, SOCK_STREAM, 0);
	ASSERT_LE(0, lsn);
	ASSERT_EQ(0, bind(lsn, (void *)&a, alen));
	ASSERT_EQ(0, listen(lsn, 1));
	ASSERT_EQ(0, getsockname(lsn, (void *)&a, &alen));
	wr = socket(self->t.family, SOCK_STREAM, 0);
	ASSERT_LE(0, wr);
	ASSERT_EQ(0, connect(wr, (void *)&a, alen));
	rd = accept(lsn, NULL, NULL);
	ASSERT_LE(0, rd);
	/* Until both ends' buffers are full, at most 8 MiB. */
	for (i = 0; i < 100 && ballast < (8u << 20); i++) {
		n = send(wr, chunk, sizeof(chunk), MSG_DONTWAIT);
		if (n > 0) {
			ballast += n;
			i = 0;
			continue;
		}
		ASSERT_EQ(EAGAIN, errno);
		usleep(1000);
	}
	TH_LOG("ballast %zu bytes", ballast);

	ASSERT_TRUE(inject_loaded());
	ASSERT_EQ(0, init_net_sysctl(TCP_MEM, NULL, self->saved_tcp_mem,
				     sizeof(self->saved_tcp_mem)));
	ASSERT_EQ(0, init_net_sysctl(TCP_MEM, "1 1 1", NULL, 0));

	ASSERT_EQ(0, inject_start(self->ulp, COUNT, SIZE));
	ASSERT_EQ(0, wait_inject_done(&st));
	ASSERT_EQ(COUNT, st.ok);
	rate = tx_work_rate(self->ulp, &runs);
	txq = diag_counter(self->ulp, "esp_txq");
	ASSERT_EQ(0, init_net_sysctl(TCP_MEM, self->saved_tcp_mem, NULL, 0));
	self->saved_tcp_mem[0] = 0;
	TH_LOG("tx work ran %lld times, %.1f a second; %lld ESP packets waiting",
	       runs, rate, txq);
	ASSERT_LE(0, rate);
	ASSERT_GT(50, rate);

	ASSERT_EQ(COUNT, read_injected(self->raw, COUNT, SIZE));
	ASSERT_EQ(0, inject_ctl("stop"));
	close(wr);
	close(rd);
	close(lsn);
}

/* Attach, exchange a message each way, close: many times over. */
TEST_F_TIMEOUT(ulp, attach_close_cycles, 600)
{
	uint8_t buf[64];
	int i;

	for (i = 0; i < 1000; i++) {
		int raw, ulp;

		ASSERT_EQ(0, connect_pair(&self->t, self->lfd, &raw, &ulp, true));
		send_ike(_metadata, raw, "ping", 4);
		ASSERT_TRUE(readable(ulp, WAIT_MS));
		ASSERT_EQ(8, recv(ulp, buf, sizeof(buf), 0));
		ASSERT_EQ(8, send(ulp, buf, 8, 0));
		ASSERT_EQ(10, read_frame(raw, buf, sizeof(buf)));
		/* Alternate who closes first; both end in a full close. */
		if (i & 1) {
			close(ulp);
			close(raw);
		} else {
			close(raw);
			close(ulp);
		}
	}
}

/* TEST_HARNESS_MAIN, with ESPINTCP_CASES (espintcp_lib.h). */
int main(int argc, char **argv)
{
	espintcp_cases_init();
	return test_harness_run(argc, argv);
}
