// SPDX-License-Identifier: GPL-2.0
/*
 * SAs and policies over XFRM netlink, as an IKE daemon installs them:
 * AES-GCM child SAs with UDP or TCP encapsulation (XFRMA_ENCAP type 7 and
 * the connection's ports for espintcp).
 */

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/udp.h>
#include <sys/socket.h>

#include "ike.h"

#ifndef TCP_ENCAP_ESPINTCP
#define TCP_ENCAP_ESPINTCP 7
#endif

struct req {
	struct nlmsghdr nh;
	char buf[1024];
};

int xfrm_open(void)
{
	struct sockaddr_nl snl = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);

	if (fd < 0 || bind(fd, (struct sockaddr *)&snl, sizeof(snl))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void *put_attr(struct req *r, int type, const void *data, int len)
{
	struct nlattr *a = (void *)((char *)&r->nh + NLMSG_ALIGN(r->nh.nlmsg_len));

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	if (data)
		memcpy((char *)a + NLA_HDRLEN, data, len);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + NLA_ALIGN(a->nla_len);
	return (char *)a + NLA_HDRLEN;
}

/* Send and wait for the ACK; returns 0 or a negative errno. */
static int transact(int nl, struct req *r)
{
	static uint32_t seq;
	char buf[4096];
	struct nlmsghdr *nh = (void *)buf;
	ssize_t n;

	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	r->nh.nlmsg_seq = ++seq;
	if (send(nl, r, r->nh.nlmsg_len, 0) != (ssize_t)r->nh.nlmsg_len)
		return -errno;
	for (;;) {
		n = recv(nl, buf, sizeof(buf), 0);
		if (n < 0)
			return -errno;
		for (nh = (void *)buf; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_seq != seq || nh->nlmsg_type != NLMSG_ERROR)
				continue;
			return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
		}
	}
}

static void start(struct req *r, int type, size_t hdrlen)
{
	memset(r, 0, sizeof(*r));
	r->nh.nlmsg_type = type;
	r->nh.nlmsg_len = NLMSG_LENGTH(hdrlen);
}

int xfrm_sa_add(int nl, const struct sa_spec *s)
{
	struct xfrm_usersa_info *p;
	struct xfrm_algo_aead *aead;
	struct req r;

	start(&r, XFRM_MSG_NEWSA, sizeof(*p));
	p = NLMSG_DATA(&r.nh);
	p->family = s->family;
	p->saddr = s->src;
	p->id.daddr = s->dst;
	p->id.spi = htonl(s->spi);
	p->id.proto = IPPROTO_ESP;
	p->reqid = s->reqid;
	p->mode = s->mode;
	p->replay_window = 64;
	p->lft.soft_byte_limit = XFRM_INF;
	p->lft.hard_byte_limit = XFRM_INF;
	p->lft.soft_packet_limit = XFRM_INF;
	p->lft.hard_packet_limit = XFRM_INF;

	aead = put_attr(&r, XFRMA_ALG_AEAD, NULL, sizeof(*aead) + KEY_LEN);
	memset(aead, 0, sizeof(*aead));
	strcpy(aead->alg_name, "rfc4106(gcm(aes))");
	aead->alg_key_len = KEY_LEN * 8;
	aead->alg_icv_len = 128;
	memcpy(aead->alg_key, s->key, KEY_LEN);

	if (s->encap_type) {
		struct xfrm_encap_tmpl enc = {
			.encap_type = s->encap_type,
			.encap_sport = htons(s->sport),
			.encap_dport = htons(s->dport),
		};

		put_attr(&r, XFRMA_ENCAP, &enc, sizeof(enc));
	}
	return transact(nl, &r);
}

int xfrm_sa_del(int nl, const struct sa_spec *s)
{
	struct xfrm_usersa_id *id;
	struct req r;

	start(&r, XFRM_MSG_DELSA, sizeof(*id));
	id = NLMSG_DATA(&r.nh);
	id->daddr = s->dst;
	id->spi = htonl(s->spi);
	id->family = s->family;
	id->proto = IPPROTO_ESP;
	put_attr(&r, XFRMA_SRCADDR, &s->src, sizeof(s->src));
	return transact(nl, &r);
}

static void selector(struct xfrm_selector *sel, const struct pol_spec *p)
{
	sel->family = p->family;
	sel->saddr = p->src;
	sel->daddr = p->dst;
	sel->prefixlen_s = p->splen;
	sel->prefixlen_d = p->dplen;
}

int xfrm_pol_add(int nl, const struct pol_spec *p)
{
	struct xfrm_userpolicy_info *pi;
	struct xfrm_user_tmpl t = { 0 };
	struct req r;

	start(&r, XFRM_MSG_NEWPOLICY, sizeof(*pi));
	pi = NLMSG_DATA(&r.nh);
	selector(&pi->sel, p);
	pi->dir = p->dir;
	pi->action = XFRM_POLICY_ALLOW;
	pi->lft.soft_byte_limit = XFRM_INF;
	pi->lft.hard_byte_limit = XFRM_INF;
	pi->lft.soft_packet_limit = XFRM_INF;
	pi->lft.hard_packet_limit = XFRM_INF;

	t.family = p->family;
	t.id.proto = IPPROTO_ESP;
	t.id.daddr = p->tdst;
	t.saddr = p->tsrc;
	t.reqid = p->reqid;
	t.mode = p->mode;
	t.aalgos = ~0U;
	t.ealgos = ~0U;
	t.calgos = ~0U;
	put_attr(&r, XFRMA_TMPL, &t, sizeof(t));
	return transact(nl, &r);
}

int xfrm_pol_del(int nl, const struct pol_spec *p)
{
	struct xfrm_userpolicy_id *id;
	struct req r;

	start(&r, XFRM_MSG_DELPOLICY, sizeof(*id));
	id = NLMSG_DATA(&r.nh);
	selector(&id->sel, p);
	id->dir = p->dir;
	return transact(nl, &r);
}
