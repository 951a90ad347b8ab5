// SPDX-License-Identifier: GPL-2.0
/*
 * ESP (RFC 4303) security associations: transform set-up shared by the IPv4
 * and IPv6 ESP types, and the per-packet crypto request buffer.
 *
 * Every SA gets one AEAD transform, x->data (xfrm_state_mtu() reads it):
 * either the SA's AEAD algorithm or authenc/authencesn around its cipher and
 * integrity algorithm, wrapped in the IV generator named by x->geniv. Both
 * directions use it: the generator derives the IV from the sequence number
 * when encrypting and reads it from the packet when decrypting.
 */

#include <crypto/aead.h>
#include <crypto/authenc.h>
#include <linux/module.h>
#include <linux/rtnetlink.h>
#include <linux/slab.h>
#include <linux/udp.h>
#include <net/ip.h>
#include <net/espintcp.h>
#include <net/espintcp_compat.h>
#include <net/ipv6.h>

#include "esp_core.h"

unsigned int esp_encap_hdrlen(const struct xfrm_encap_tmpl *encap, bool rx)
{
	if (!encap)
		return 0;
	switch (encap->encap_type) {
	case UDP_ENCAP_ESPINUDP:
		return sizeof(struct udphdr);
	case UDP_ENCAP_ESPINUDP_NON_IKE:
		/* RFC 3948's predecessor: 8 zero bytes after the header. */
		return sizeof(struct udphdr) + 2 * sizeof(__be32);
	case TCP_ENCAP_ESPINTCP:
		/* Sent: nothing, the Length is not part of the packet.
		 * Received: the ports, see include/net/espintcp.h.
		 */
		return rx ? sizeof(struct espintcp_encaphdr) : 0;
	default:
		return 0;
	}
}

static int esp_alg_name(char *buf, const char *geniv, const char *alg)
{
	int n;

	if (geniv)
		n = snprintf(buf, CRYPTO_MAX_ALG_NAME, "%s(%s)", geniv, alg);
	else
		n = snprintf(buf, CRYPTO_MAX_ALG_NAME, "%s", alg);
	return n < CRYPTO_MAX_ALG_NAME ? 0 : -ENAMETOOLONG;
}

static struct crypto_aead *esp_aead_alloc(const char *name,
					  struct netlink_ext_ack *extack)
{
	struct crypto_aead *aead = crypto_alloc_aead(name, 0, 0);

	if (IS_ERR(aead))
		NL_SET_ERR_MSG(extack, "ESP: algorithm not available");
	return aead;
}

static struct crypto_aead *esp_init_aead(struct xfrm_state *x,
					 struct netlink_ext_ack *extack)
{
	char name[CRYPTO_MAX_ALG_NAME];
	struct crypto_aead *aead;
	int err;

	err = esp_alg_name(name, x->geniv, x->aead->alg_name);
	if (err)
		return ERR_PTR(err);
	aead = esp_aead_alloc(name, extack);
	if (IS_ERR(aead))
		return aead;

	err = crypto_aead_setkey(aead, x->aead->alg_key,
				 (x->aead->alg_key_len + 7) / 8);
	if (!err)
		err = crypto_aead_setauthsize(aead, x->aead->alg_icv_len / 8);
	if (err) {
		NL_SET_ERR_MSG(extack, "ESP: key or ICV length rejected");
		crypto_free_aead(aead);
		return ERR_PTR(err);
	}
	return aead;
}

/* authenc keys: an rtattr with the cipher key length, then both keys. */
static int esp_authenc_setkey(struct crypto_aead *aead, struct xfrm_state *x)
{
	unsigned int akeylen = x->aalg ? (x->aalg->alg_key_len + 7) / 8 : 0;
	unsigned int ekeylen = x->ealg ? (x->ealg->alg_key_len + 7) / 8 : 0;
	struct crypto_authenc_key_param *param;
	unsigned int keylen;
	struct rtattr *rta;
	u8 *key, *p;
	int err;

	keylen = RTA_SPACE(sizeof(*param)) + akeylen + ekeylen;
	key = kmalloc(keylen, GFP_KERNEL);
	if (!key)
		return -ENOMEM;

	rta = (struct rtattr *)key;
	rta->rta_type = CRYPTO_AUTHENC_KEYA_PARAM;
	rta->rta_len = RTA_LENGTH(sizeof(*param));
	param = RTA_DATA(rta);
	param->enckeylen = cpu_to_be32(ekeylen);

	p = key + RTA_SPACE(sizeof(*param));
	if (akeylen)
		memcpy(p, x->aalg->alg_key, akeylen);
	if (ekeylen)
		memcpy(p + akeylen, x->ealg->alg_key, ekeylen);

	err = crypto_aead_setkey(aead, key, keylen);
	kfree_sensitive(key);
	return err;
}

static struct crypto_aead *esp_init_authenc(struct xfrm_state *x,
					    struct netlink_ext_ack *extack)
{
	const char *ealg = x->ealg ? x->ealg->alg_name : "ecb(cipher_null)";
	const char *aalg = x->aalg ? x->aalg->alg_name : "digest_null";
	const char *tmpl = x->props.flags & XFRM_STATE_ESN ?
			   "authencesn" : "authenc";
	char inner[CRYPTO_MAX_ALG_NAME], name[CRYPTO_MAX_ALG_NAME];
	struct crypto_aead *aead;
	int err;

	if (snprintf(inner, sizeof(inner), "%s(%s,%s)", tmpl, aalg, ealg) >=
	    sizeof(inner))
		return ERR_PTR(-ENAMETOOLONG);
	err = esp_alg_name(name, x->geniv, inner);
	if (err)
		return ERR_PTR(err);
	aead = esp_aead_alloc(name, extack);
	if (IS_ERR(aead))
		return aead;

	err = esp_authenc_setkey(aead, x);
	if (err) {
		NL_SET_ERR_MSG(extack, "ESP: key rejected");
		goto fail;
	}
	if (x->aalg) {
		err = crypto_aead_setauthsize(aead,
					      x->aalg->alg_trunc_len / 8);
		if (err) {
			NL_SET_ERR_MSG(extack, "ESP: ICV truncation rejected");
			goto fail;
		}
	}
	return aead;
fail:
	crypto_free_aead(aead);
	return ERR_PTR(err);
}

static int esp_check_encap(const struct xfrm_state *x,
			   struct netlink_ext_ack *extack)
{
	if (!x->encap)
		return 0;
	switch (x->encap->encap_type) {
	case UDP_ENCAP_ESPINUDP_NON_IKE:
		if (espintcp_udp_non_ike_supported())
			return 0;
		NL_SET_ERR_MSG(extack, "ESP: this kernel has no non-IKE UDP encapsulation");
		return -EINVAL;
	case UDP_ENCAP_ESPINUDP:
	case TCP_ENCAP_ESPINTCP:
		return 0;
	default:
		NL_SET_ERR_MSG(extack, "ESP: unsupported encapsulation type");
		return -EINVAL;
	}
}

int esp_core_init_state(struct xfrm_state *x, unsigned int mode_hdrlen,
			struct netlink_ext_ack *extack)
{
	struct crypto_aead *aead;
	unsigned int align;
	int err;

	x->data = NULL;
	if (x->aead && (x->ealg || x->aalg)) {
		NL_SET_ERR_MSG(extack, "ESP: AEAD excludes other algorithms");
		return -EINVAL;
	}
	if (!x->aead && !x->ealg && !x->aalg) {
		NL_SET_ERR_MSG(extack, "ESP: no algorithm");
		return -EINVAL;
	}
	err = esp_check_encap(x, extack);
	if (err)
		return err;

	aead = x->aead ? esp_init_aead(x, extack) : esp_init_authenc(x, extack);
	if (IS_ERR(aead))
		return PTR_ERR(aead);

	if (x->encap && x->encap->encap_type == TCP_ENCAP_ESPINTCP) {
		err = esp_tcp_init_state(x);
		if (err) {
			crypto_free_aead(aead);
			return err;
		}
	}
	x->data = aead;

	x->props.header_len = sizeof(struct ip_esp_hdr) +
			      crypto_aead_ivsize(aead) + mode_hdrlen +
			      esp_encap_hdrlen(x->encap, false);
	/* Worst-case padding, Pad Length, Next Header, ICV. */
	align = ALIGN(crypto_aead_blocksize(aead), 4);
	x->props.trailer_len = align - 1 + 2 + crypto_aead_authsize(aead);
	return 0;
}
EXPORT_SYMBOL_GPL(esp_core_init_state);

void esp_core_destroy_state(struct xfrm_state *x)
{
	struct crypto_aead *aead = x->data;

	/* x->encap is gone already: the core frees it before us. */
	esp_tcp_destroy_state(x);
	if (aead)
		crypto_free_aead(aead);
	x->data = NULL;
}
EXPORT_SYMBOL_GPL(esp_core_destroy_state);

int esp_core_may_register(unsigned short family, const char *modname)
{
	struct xfrm_state_afinfo *afinfo;
	const void *other = NULL;

	rcu_read_lock();
	afinfo = xfrm_state_afinfo_get_rcu(family);
	if (afinfo)
		other = READ_ONCE(afinfo->type_esp);
	rcu_read_unlock();
	if (!afinfo)
		return -EAFNOSUPPORT;
	if (other) {
		pr_err("%s: another ESP transform is registered (the distribution's %s?); remove it first\n",
		       modname, modname);
		return -EBUSY;
	}
	return 0;
}
EXPORT_SYMBOL_GPL(esp_core_may_register);

int esp_req_alloc(struct crypto_aead *aead, int nsg, struct esp_req *r)
{
	unsigned int alignmask = crypto_aead_alignmask(aead);
	size_t ad_off, iv_off, sg_off, len;
	u8 *buf;

	/* The request first, as aead_request_alloc() would place it. */
	len = sizeof(struct aead_request) + crypto_aead_reqsize(aead);
	ad_off = ALIGN(len, __alignof__(__be32));
	iv_off = ad_off + ESP_AD_MAX;
	/* Room to align the IV for the algorithm's alignmask. */
	sg_off = ALIGN(iv_off + alignmask + crypto_aead_ivsize(aead),
		       __alignof__(struct scatterlist));
	len = sg_off + nsg * sizeof(struct scatterlist);

	buf = kmalloc(len, GFP_ATOMIC);
	if (!buf)
		return -ENOMEM;
	r->buf = buf;
	r->req = (struct aead_request *)buf;
	aead_request_set_tfm(r->req, aead);
	r->ad = (__be32 *)(buf + ad_off);
	r->iv = PTR_ALIGN(buf + iv_off, alignmask + 1);
	r->sg = (struct scatterlist *)(buf + sg_off);
	return 0;
}

int esp_req_sg(struct esp_req *r, struct xfrm_state *x, struct sk_buff *skb,
	       __be32 spi, __be32 seq_lo, __be32 seq_hi, int nsg, int offset,
	       int len)
{
	unsigned int adlen;
	int n;

	/* RFC 4303 3.3.2.1 / RFC 4106 5: with ESN the high half of the
	 * sequence number is authenticated but not sent. authencesn and
	 * the AEAD templates both expect SPI | seq_hi | seq_lo.
	 */
	r->ad[0] = spi;
	if (x->props.flags & XFRM_STATE_ESN) {
		r->ad[1] = seq_hi;
		r->ad[2] = seq_lo;
		adlen = 3 * sizeof(__be32);
	} else {
		r->ad[1] = seq_lo;
		adlen = 2 * sizeof(__be32);
	}

	sg_init_table(r->sg, nsg);
	sg_set_buf(r->sg, r->ad, adlen);
	n = skb_to_sgvec(skb, r->sg + 1, offset, len);
	if (unlikely(n < 0))
		return n;
	return adlen;
}
