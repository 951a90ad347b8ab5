// SPDX-License-Identifier: GPL-2.0
/*
 * XFRM netlink requests, see xfrm_nl.h.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xfrm_nl.h"

int xfrm_nl_open(void)
{
	struct sockaddr_nl snl = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);
	int err;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&snl, sizeof(snl))) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

void xfrm_nl_start(struct xfrm_nlreq *r, int type, size_t hdrlen)
{
	memset(r, 0, sizeof(*r));
	r->nh.nlmsg_type = type;
	r->nh.nlmsg_len = NLMSG_LENGTH(hdrlen);
}

void *xfrm_nl_attr(struct xfrm_nlreq *r, int type, const void *data, int len)
{
	size_t off = NLMSG_ALIGN(r->nh.nlmsg_len);
	struct nlattr *a = (void *)((char *)&r->nh + off);

	/* The requests are fixed by the callers: too long is their bug. */
	if (off + NLA_ALIGN(NLA_HDRLEN + len) > sizeof(*r))
		abort();
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	if (data)
		memcpy((char *)a + NLA_HDRLEN, data, len);
	r->nh.nlmsg_len = off + NLA_ALIGN(a->nla_len);
	return (char *)a + NLA_HDRLEN;
}

int xfrm_nl_transact(int nl, struct xfrm_nlreq *r)
{
	static uint32_t seq;
	char buf[8192];
	struct nlmsghdr *nh;
	ssize_t n;

	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	r->nh.nlmsg_seq = ++seq;
	if (send(nl, r, r->nh.nlmsg_len, 0) != (ssize_t)r->nh.nlmsg_len)
		return -errno;
	for (;;) {
		n = recv(nl, buf, sizeof(buf), 0);
		if (n < 0)
			return -errno;
		for (nh = (void *)buf; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n))
			if (nh->nlmsg_seq == seq && nh->nlmsg_type == NLMSG_ERROR)
				return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
	}
}

void xfrm_nl_no_limits(struct xfrm_lifetime_cfg *lft)
{
	lft->soft_byte_limit = XFRM_INF;
	lft->hard_byte_limit = XFRM_INF;
	lft->soft_packet_limit = XFRM_INF;
	lft->hard_packet_limit = XFRM_INF;
}

int xfrm_nl_sa_del(int nl, int family, const xfrm_address_t *src,
		   const xfrm_address_t *dst, uint32_t spi)
{
	struct xfrm_usersa_id *id;
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, XFRM_MSG_DELSA, sizeof(*id));
	id = NLMSG_DATA(&r.nh);
	id->daddr = *dst;
	id->spi = htonl(spi);
	id->family = family;
	id->proto = IPPROTO_ESP;
	xfrm_nl_attr(&r, XFRMA_SRCADDR, src, sizeof(*src));
	return xfrm_nl_transact(nl, &r);
}
