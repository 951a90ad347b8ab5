/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the espintcp selftests: byte-stream I/O with bounded
 * waits, payload patterns, XFRM statistics, running commands.
 */
#ifndef _ESPINTCP_LIB_H
#define _ESPINTCP_LIB_H

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/xfrm.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define WAIT_MS		20000	/* bound for anything that must happen */

static const char ulp_name[] = "espintcp";

/*
 * For kselftest_harness.h fixtures. The harness runs a fixture's teardown
 * only after its setup completed: a setup step that fails tears down what
 * was built before it, so that no namespace (with SAs holding esp4/esp6)
 * outlives the test.
 */
#define SETUP_OK(fixture, expr) do {					\
	int __rc = (expr), __err = errno;				\
									\
	if (__rc)							\
		fixture##_teardown(_metadata, self, variant);		\
	ASSERT_EQ(0, __rc) TH_LOG("setup: %s: %s", #expr,		\
				  strerror(__err));			\
} while (0)

/* ADDR (IPv4 or IPv6) and PORT into @ss; returns its length, 0 if ADDR is
 * neither.
 */
static inline socklen_t parse_addr(const char *a, int port,
				   struct sockaddr_storage *ss)
{
	struct sockaddr_in *a4 = (void *)ss;
	struct sockaddr_in6 *a6 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, a, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return sizeof(*a4);
	}
	if (inet_pton(AF_INET6, a, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		return sizeof(*a6);
	}
	return 0;
}

/* Listen on @ss and say so ("listening" on stdout, for scripts to poll). */
static inline int listen_announce(int fd, const struct sockaddr_storage *ss,
				  socklen_t len, int backlog)
{
	int one = 1;

	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (const void *)ss, len) || listen(fd, backlog)) {
		perror("listen");
		return -1;
	}
	printf("listening\n");
	fflush(stdout);
	return 0;
}

static inline int attach(int fd)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp_name, sizeof(ulp_name));
}

static inline int run(const char *cmd)
{
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static inline int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* Read exactly len bytes, waiting at most WAIT_MS for each chunk. */
static inline int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, WAIT_MS) != 1)
			return -1;
		n = read(fd, p, len);
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* recv() once @fd is readable, waiting at most WAIT_MS. */
static inline ssize_t recv_wait(int fd, void *buf, size_t size)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	if (poll(&pfd, 1, WAIT_MS) != 1)
		return -1;
	return recv(fd, buf, size, 0);
}

/* A payload whose bytes encode its own identity, for integrity checks. */
static inline void fill(uint8_t *p, size_t len, uint32_t seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7);
}

static inline int check_fill(const uint8_t *p, size_t len, uint32_t seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed * 31 + i * 7))
			return -1;
	return 0;
}

/* One counter of /proc/net/xfrm_stat in the calling thread's namespace. */
static inline uint64_t read_xfrm_counter(const char *name)
{
	char line[256], key[128];
	unsigned long long v;
	uint64_t ret = 0;
	FILE *f = fopen("/proc/thread-self/net/xfrm_stat", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %llu", key, &v) == 2 &&
		    (!name ? 1 : !strcmp(key, name)))
			ret += v;
	fclose(f);
	return ret;
}

/* What IKE daemons do to their own sockets: no IPsec for IKE itself. */
static inline int xfrm_bypass(int fd, int family)
{
	int level = family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
	int opt = family == AF_INET ? IP_XFRM_POLICY : IPV6_XFRM_POLICY;
	struct xfrm_userpolicy_info pol;
	int dir;

	for (dir = XFRM_POLICY_IN; dir <= XFRM_POLICY_OUT; dir++) {
		memset(&pol, 0, sizeof(pol));
		pol.action = XFRM_POLICY_ALLOW;
		pol.sel.family = family;
		pol.dir = dir;
		pol.lft.soft_byte_limit = XFRM_INF;
		pol.lft.hard_byte_limit = XFRM_INF;
		pol.lft.soft_packet_limit = XFRM_INF;
		pol.lft.hard_packet_limit = XFRM_INF;
		if (setsockopt(fd, level, opt, &pol, sizeof(pol)))
			return -1;
	}
	return 0;
}

#ifdef __KSELFTEST_HARNESS_H
#include <regex.h>

/*
 * ESPINTCP_CASES=REGEX runs only the tests whose full name
 * (fixture.variant.test, as TAP prints it) matches, as it does for the shell
 * tests; the others are reported skipped, without their fixture's setup.
 * For development: the 6.1 harness has no filter of its own. Call
 * espintcp_cases_init() before test_harness_run().
 */
typedef void (*espintcp_test_fn)(struct __test_metadata *metadata,
				 struct __fixture_variant_metadata *variant);

static struct {
	regex_t re;
	unsigned int n;
	struct {
		struct __test_metadata *t;
		espintcp_test_fn fn;
	} *tests;
} espintcp_cases;

static void espintcp_case_select(struct __test_metadata *_metadata,
				 struct __fixture_variant_metadata *variant)
{
	const char *v = variant->name;
	char name[256];
	unsigned int i;

	snprintf(name, sizeof(name), "%s%s%s.%s", _metadata->fixture->name,
		 *v ? "." : "", v, _metadata->name);
	for (i = 0; i < espintcp_cases.n; i++)
		if (espintcp_cases.tests[i].t == _metadata)
			break;
	if (i < espintcp_cases.n &&
	    !regexec(&espintcp_cases.re, name, 0, NULL, 0)) {
		espintcp_cases.tests[i].fn(_metadata, variant);
		return;
	}
	SKIP(return, "not selected");
}

static inline void espintcp_cases_init(void)
{
	const char *cases = getenv("ESPINTCP_CASES");
	struct __fixture_metadata *f;
	struct __test_metadata *t;
	unsigned int n = 0;

	if (!cases || !*cases)
		return;
	if (regcomp(&espintcp_cases.re, cases, REG_EXTENDED | REG_NOSUB)) {
		fprintf(stderr, "ESPINTCP_CASES: bad regex '%s'\n", cases);
		exit(KSFT_FAIL);
	}
	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next)
			n++;
	espintcp_cases.tests = calloc(n, sizeof(*espintcp_cases.tests));
	if (!espintcp_cases.tests)
		exit(KSFT_FAIL);
	for (f = __fixture_list; f; f = f->next) {
		for (t = f->tests; t; t = t->next) {
			espintcp_cases.tests[espintcp_cases.n].t = t;
			espintcp_cases.tests[espintcp_cases.n].fn = t->fn;
			espintcp_cases.n++;
			t->fn = espintcp_case_select;
		}
	}
}
#endif /* __KSELFTEST_HARNESS_H */

#endif /* _ESPINTCP_LIB_H */
