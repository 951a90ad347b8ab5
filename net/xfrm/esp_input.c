// SPDX-License-Identifier: GPL-2.0
/*
 * ESP input (RFC 4303 3.4) for both address families.
 *
 * On entry skb->data and the transport header point at the ESP header; for
 * UDP and TCP encapsulation the encapsulation header (source port first) sits
 * right in front of it, after the outer IP header.
 *
 * The packet is always made private before it is decrypted in place: page
 * frags may belong to the page cache (a file spliced or sent with sendfile())
 * or to another skb, and decrypting over them would write into memory the
 * receiver does not own.
 */

#include <crypto/aead.h>
#include <linux/skbuff.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/xfrm.h>

#include <net/espintcp_compat.h>
#include "esp_core.h"

static void esp_outer_saddr(const struct sk_buff *skb, unsigned short family,
			    xfrm_address_t *addr)
{
	memset(addr, 0, sizeof(*addr));
	if (family == AF_INET)
		addr->a4 = ip_hdr(skb)->saddr;
	else
		addr->in6 = ipv6_hdr(skb)->saddr;
}

/* RFC 3948 / RFC 9329: the peer's address or port changed (NAT rebinding,
 * or a new TCP connection). Tell the key manager, once the packet has
 * proven authentic.
 */
static void esp_input_encap(struct xfrm_state *x, struct sk_buff *skb,
			    unsigned int encap_len)
{
	__be16 *ports = (__be16 *)(skb_transport_header(skb) - encap_len);
	xfrm_address_t saddr;
	bool moved;

	esp_outer_saddr(skb, x->props.family, &saddr);

	spin_lock_bh(&x->lock);
	moved = !xfrm_addr_equal(&saddr, &x->props.saddr, x->props.family) ||
		ports[0] != x->encap->encap_sport;
	spin_unlock_bh(&x->lock);
	if (moved)
		km_new_mapping(x, &saddr, ports[0]);

	/* RFC 3948 3.1.2: the inner checksums of a NATed transport-mode
	 * packet cover addresses we never saw; ESP's ICV protects it.
	 */
	if (x->props.mode == XFRM_MODE_TRANSPORT)
		skb->ip_summed = CHECKSUM_UNNECESSARY;
}

/* Decryption is done: check and strip the trailer and the ESP header. */
static int esp_input_finish(struct xfrm_state *x, struct sk_buff *skb, int err)
{
	struct crypto_aead *aead = x->data;
	int alen = crypto_aead_authsize(aead);
	int hlen = sizeof(struct ip_esp_hdr) + crypto_aead_ivsize(aead);
	unsigned int encap_len;
	int hdr_len, padlen;
	u8 tail[2];

	kfree(ESP_CORE_CB(skb)->req_buf);
	if (unlikely(err))
		return err;

	/* Pad Length and Next Header, just before the ICV. */
	if (skb_copy_bits(skb, skb->len - alen - 2, tail, sizeof(tail)))
		return -EINVAL;
	padlen = tail[0];
	if (padlen + 2 + alen > skb->len - hlen)
		return -EINVAL;
	err = pskb_trim(skb, skb->len - alen - padlen - 2);
	if (unlikely(err))
		return err;

	encap_len = esp_encap_hdrlen(x->encap, true);
	if (x->encap)
		esp_input_encap(x, skb, encap_len);

	/* The outer IP header, options and extension headers, no encap. */
	hdr_len = skb_network_header_len(skb) - encap_len;

	__skb_pull(skb, hlen);
	if (x->props.mode == XFRM_MODE_TUNNEL ||
	    x->props.mode == XFRM_MODE_BEET)
		skb_reset_transport_header(skb);
	else
		skb_set_transport_header(skb, -hdr_len);

	return tail[1];
}

static void esp_input_done(ESPINTCP_CRYPTO_CB_ARG arg, int err)
{
	struct sk_buff *skb = espintcp_crypto_cb_data(arg);
	struct xfrm_state *x = xfrm_input_state(skb);

	xfrm_input_resume(skb, esp_input_finish(x, skb, err));
}

int esp_core_input(struct xfrm_state *x, struct sk_buff *skb)
{
	struct crypto_aead *aead = x->data;
	int ivlen = crypto_aead_ivsize(aead);
	int alen = crypto_aead_authsize(aead);
	int hlen = sizeof(struct ip_esp_hdr) + ivlen;
	struct ip_esp_hdr esph;
	struct sk_buff *trailer;
	int elen, nfrags, adlen, err;
	struct esp_req r;

	elen = skb->len - hlen - alen;
	if (elen <= 0 || elen % crypto_aead_blocksize(aead))
		return -EINVAL;
	if (skb_copy_bits(skb, 0, &esph, sizeof(esph)))
		return -EINVAL;

	/* Un-share everything: never decrypt over pages we do not own. */
	nfrags = skb_cow_data(skb, 0, &trailer);
	if (nfrags < 0)
		return nfrags;
	/* Whatever a device summed, it summed the ciphertext. */
	skb->ip_summed = CHECKSUM_NONE;

	err = esp_req_alloc(aead, nfrags + 1, &r);
	if (err)
		return err;
	adlen = esp_req_sg(&r, x, skb, esph.spi, esph.seq_no,
			   XFRM_SKB_CB(skb)->seq.input.hi, nfrags + 1,
			   sizeof(esph), skb->len - sizeof(esph));
	if (adlen < 0) {
		kfree(r.buf);
		return adlen;
	}

	ESP_CORE_CB(skb)->req_buf = r.buf;
	aead_request_set_callback(r.req, 0, esp_input_done, skb);
	aead_request_set_crypt(r.req, r.sg, r.sg, ivlen + elen + alen, r.iv);
	aead_request_set_ad(r.req, adlen);

	err = crypto_aead_decrypt(r.req);
	if (err == -EINPROGRESS)
		return err;
	if (err == -ENOSPC)
		err = -ENOBUFS;
	return esp_input_finish(x, skb, err);
}
EXPORT_SYMBOL_GPL(esp_core_input);

/* RFC 4303 2.6: a dummy packet (next header 59, "no next header") must be
 * discarded. XFRM has verified, counted and replay-checked it by now; in
 * transport and BEET mode it would otherwise pass the packet up, and IPv4
 * answers an unknown protocol with an ICMP error. (In tunnel mode the core
 * refuses it before, as a mode error.)
 */
int esp_core_rcv_cb(struct sk_buff *skb, int err)
{
	if (!err && XFRM_MODE_SKB_CB(skb)->protocol == IPPROTO_NONE)
		return -ENODATA;
	return 0;
}
EXPORT_SYMBOL_GPL(esp_core_rcv_cb);
