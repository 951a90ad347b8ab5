// SPDX-License-Identifier: GPL-2.0
/*
 * SAs and policies over XFRM netlink, as an IKE daemon installs them:
 * AES-GCM child SAs with UDP or TCP encapsulation (XFRMA_ENCAP type 7 and
 * the connection's ports for espintcp).
 */

#include <arpa/inet.h>
#include <string.h>

#include "ike.h"

int xfrm_sa_add(int nl, const struct sa_spec *s)
{
	struct xfrm_usersa_info *p;
	struct xfrm_algo_aead *aead;
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, XFRM_MSG_NEWSA, sizeof(*p));
	p = NLMSG_DATA(&r.nh);
	p->family = s->family;
	p->saddr = s->src;
	p->id.daddr = s->dst;
	p->id.spi = htonl(s->spi);
	p->id.proto = IPPROTO_ESP;
	p->reqid = s->reqid;
	p->mode = s->mode;
	p->replay_window = 64;
	xfrm_nl_no_limits(&p->lft);

	aead = xfrm_nl_attr(&r, XFRMA_ALG_AEAD, NULL, sizeof(*aead) + KEY_LEN);
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

		xfrm_nl_attr(&r, XFRMA_ENCAP, &enc, sizeof(enc));
	}
	return xfrm_nl_transact(nl, &r);
}

int xfrm_sa_del(int nl, const struct sa_spec *s)
{
	return xfrm_nl_sa_del(nl, s->family, &s->src, &s->dst, s->spi);
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
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, XFRM_MSG_NEWPOLICY, sizeof(*pi));
	pi = NLMSG_DATA(&r.nh);
	selector(&pi->sel, p);
	pi->dir = p->dir;
	pi->action = XFRM_POLICY_ALLOW;
	xfrm_nl_no_limits(&pi->lft);

	t.family = p->family;
	t.id.proto = IPPROTO_ESP;
	t.id.daddr = p->tdst;
	t.saddr = p->tsrc;
	t.reqid = p->reqid;
	t.mode = p->mode;
	t.aalgos = ~0U;
	t.ealgos = ~0U;
	t.calgos = ~0U;
	xfrm_nl_attr(&r, XFRMA_TMPL, &t, sizeof(t));
	return xfrm_nl_transact(nl, &r);
}

int xfrm_pol_del(int nl, const struct pol_spec *p)
{
	struct xfrm_userpolicy_id *id;
	struct xfrm_nlreq r;

	xfrm_nl_start(&r, XFRM_MSG_DELPOLICY, sizeof(*id));
	id = NLMSG_DATA(&r.nh);
	selector(&id->sel, p);
	id->dir = p->dir;
	return xfrm_nl_transact(nl, &r);
}
