// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_diag: print the espintcp ULP counters of every TCP socket that has
 * the ULP, from sock_diag (what `ss -tie` shows as tcp-ulp-espintcp).
 *
 * Usage: espintcp_diag [PORT]
 *   One line per socket: "LOCAL PEER name=value ...". With PORT, only
 *   sockets whose local or peer port is PORT. Needs CAP_NET_ADMIN (the
 *   kernel reports ULP details to privileged requesters only).
 * Exit status: 0 when at least one socket was printed, 1 when none, 2 on
 * error.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../../../../include/uapi/linux/espintcp.h"

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

static const char * const counter_names[] = {
	[ESPINTCP_INFO_IKE_RX]		= "ike_rx",
	[ESPINTCP_INFO_IKE_TX]		= "ike_tx",
	[ESPINTCP_INFO_ESP_RX]		= "esp_rx",
	[ESPINTCP_INFO_ESP_TX]		= "esp_tx",
	[ESPINTCP_INFO_KEEPALIVE_RX]	= "keepalive_rx",
	[ESPINTCP_INFO_IKE_RX_DROPS]	= "ike_rx_drops",
	[ESPINTCP_INFO_ESP_RX_DROPS]	= "esp_rx_drops",
	[ESPINTCP_INFO_BAD_RX]		= "bad_rx",
	[ESPINTCP_INFO_ESP_TX_DROPS]	= "esp_tx_drops",
	[ESPINTCP_INFO_IKE_RXQ]		= "ike_rxq",
	[ESPINTCP_INFO_ESP_TXQ]		= "esp_txq",
	[ESPINTCP_INFO_TX_WORK]		= "tx_work",
	[ESPINTCP_INFO_ESP_TX_CONGESTION] = "esp_tx_congestion",
	[ESPINTCP_INFO_ESP_TXQ_BYTES]	= "esp_txq_bytes",
	[ESPINTCP_INFO_RX_UNSTALL]	= "rx_unstall",
};

static void print_addr(int family, const __be32 *addr, __be16 port)
{
	char buf[INET6_ADDRSTRLEN];

	inet_ntop(family, addr, buf, sizeof(buf));
	printf(family == AF_INET6 ? "[%s]:%u" : "%s:%u", buf, ntohs(port));
}

static void print_counters(const struct nlattr *nest)
{
	const struct nlattr *a = (const void *)((const char *)nest + NLA_HDRLEN);
	int rem = nest->nla_len - NLA_HDRLEN;

	while (rem >= (int)NLA_HDRLEN && a->nla_len >= NLA_HDRLEN &&
	       a->nla_len <= rem) {
		int type = a->nla_type & NLA_TYPE_MASK;
		uint64_t val;

		if (type < (int)ARRAY_SIZE(counter_names) &&
		    counter_names[type] &&
		    a->nla_len >= NLA_HDRLEN + sizeof(val)) {
			memcpy(&val, (const char *)a + NLA_HDRLEN, sizeof(val));
			printf(" %s=%llu", counter_names[type],
			       (unsigned long long)val);
		}
		rem -= NLA_ALIGN(a->nla_len);
		a = (const void *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
}

/* Returns 1 when the socket has the espintcp ULP and was printed. */
static int show_sock(const struct inet_diag_msg *m, int len, int port)
{
	const struct nlattr *a = (const void *)(m + 1);
	const struct nlattr *ulp = NULL, *name = NULL, *info = NULL;
	int rem = len - (int)sizeof(*m);

	while (rem >= (int)NLA_HDRLEN && a->nla_len >= NLA_HDRLEN &&
	       a->nla_len <= rem) {
		if ((a->nla_type & NLA_TYPE_MASK) == INET_DIAG_ULP_INFO)
			ulp = a;
		rem -= NLA_ALIGN(a->nla_len);
		a = (const void *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
	if (!ulp)
		return 0;

	a = (const void *)((const char *)ulp + NLA_HDRLEN);
	rem = ulp->nla_len - NLA_HDRLEN;
	while (rem >= (int)NLA_HDRLEN && a->nla_len >= NLA_HDRLEN &&
	       a->nla_len <= rem) {
		int type = a->nla_type & NLA_TYPE_MASK;

		if (type == INET_ULP_INFO_NAME)
			name = a;
		else if (type == INET_ULP_INFO_ESPINTCP)
			info = a;
		rem -= NLA_ALIGN(a->nla_len);
		a = (const void *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
	if (!name || strncmp((const char *)name + NLA_HDRLEN, "espintcp",
			     name->nla_len - NLA_HDRLEN))
		return 0;
	if (port >= 0 && ntohs(m->id.idiag_sport) != port &&
	    ntohs(m->id.idiag_dport) != port)
		return 0;

	print_addr(m->idiag_family, m->id.idiag_src, m->id.idiag_sport);
	putchar(' ');
	print_addr(m->idiag_family, m->id.idiag_dst, m->id.idiag_dport);
	if (info)
		print_counters(info);
	putchar('\n');
	return 1;
}

static int dump(int fd, int family, int port)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nlh = {
			.nlmsg_len = sizeof(msg),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
		},
		.req = {
			.sdiag_family = family,
			.sdiag_protocol = IPPROTO_TCP,
			.idiag_ext = 1 << (INET_DIAG_INFO - 1),
			.idiag_states = ~0U,
		},
	};
	static char buf[1 << 16];
	int shown = 0;

	if (send(fd, &msg, sizeof(msg), 0) < 0)
		return -errno;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		struct nlmsghdr *h = (struct nlmsghdr *)buf;

		if (n < 0)
			return -errno;
		for (; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return shown;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error ? e->error : shown;
			}
			shown += show_sock(NLMSG_DATA(h),
					   h->nlmsg_len - NLMSG_HDRLEN, port);
		}
	}
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : -1;
	int fd, ret4, ret6;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0) {
		perror("socket(NETLINK_SOCK_DIAG)");
		return 2;
	}
	ret4 = dump(fd, AF_INET, port);
	ret6 = dump(fd, AF_INET6, port);
	close(fd);
	if (ret4 < 0 || ret6 < 0) {
		fprintf(stderr, "sock_diag: %s\n",
			strerror(-(ret4 < 0 ? ret4 : ret6)));
		return 2;
	}
	return ret4 + ret6 ? 0 : 1;
}
