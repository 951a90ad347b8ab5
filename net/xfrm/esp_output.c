// SPDX-License-Identifier: GPL-2.0
/*
 * ESP output (RFC 4303 3.3) for both address families, with UDP (RFC 3948)
 * or TCP (RFC 9329) encapsulation.
 *
 * On entry the outer mode has made room for x->props.header_len bytes:
 * skb->data points at the payload, the transport header at the room (where
 * the UDP header, if any, and then the ESP header and IV go) and the mac
 * header at the protocol byte naming what follows the outer IP header.
 */

#include <crypto/aead.h>
#include <linux/skbuff.h>
#include <linux/udp.h>
#include <net/ip6_checksum.h>
#include <net/ipv6.h>
#include <net/xfrm.h>

#include <net/espintcp_compat.h>
#include "esp_core.h"

/* RFC 4303 2.5: Padding bytes are 1, 2, 3, ... */
static void esp_fill_trailer(u8 *tail, int tfclen, int padlen, u8 proto)
{
	int i;

	memset(tail, 0, tfclen);
	tail += tfclen;
	for (i = 0; i < padlen; i++)
		tail[i] = i + 1;
	tail[padlen] = padlen;
	tail[padlen + 1] = proto;
}

/* Traffic flow confidentiality: pad the payload up to x->tfcpad. */
static int esp_tfclen(struct xfrm_state *x, struct sk_buff *skb)
{
	struct xfrm_dst *xdst = (struct xfrm_dst *)skb_dst(skb);
	u32 padto;

	if (!x->tfcpad || !xdst)
		return 0;
	padto = min_t(u32, x->tfcpad,
		      xfrm_state_mtu(x, READ_ONCE(xdst->child_mtu_cached)));
	return skb->len < padto ? padto - skb->len : 0;
}

/* IPv6 UDP needs a checksum (RFC 8200 8.1); it covers the ciphertext. */
static void esp_udp6_csum(struct sk_buff *skb)
{
	int off = skb_transport_offset(skb);
	struct udphdr *uh = udp_hdr(skb);
	struct ipv6hdr *ip6h = ipv6_hdr(skb);
	__wsum csum;

	uh->check = 0;
	csum = skb_checksum(skb, off, skb->len - off, 0);
	uh->check = csum_ipv6_magic(&ip6h->saddr, &ip6h->daddr,
				    skb->len - off, IPPROTO_UDP, csum);
	if (!uh->check)
		uh->check = CSUM_MANGLED_0;
}

/* The packet is encrypted. Returns what xfrm_type->output returns: 0 to let
 * XFRM send it, -EINPROGRESS when it left through a TCP socket.
 */
static int esp_output_finish(struct xfrm_state *x, struct sk_buff *skb,
			     u16 encap_type)
{
	switch (encap_type) {
	case UDP_ENCAP_ESPINUDP:
	case UDP_ENCAP_ESPINUDP_NON_IKE:
		if (x->props.family == AF_INET6)
			esp_udp6_csum(skb);
		return 0;
	case TCP_ENCAP_ESPINTCP:
		esp_tcp_output(x, skb);
		return -EINPROGRESS;
	default:
		return 0;
	}
}

static void esp_output_done(ESPINTCP_CRYPTO_CB_ARG arg, int err)
{
	struct sk_buff *skb = espintcp_crypto_cb_data(arg);
	struct xfrm_state *x = skb_dst(skb)->xfrm;
	u16 encap_type = 0;

	kfree(ESP_CORE_CB(skb)->req_buf);
	if (!err) {
		spin_lock_bh(&x->lock);
		if (x->encap)
			encap_type = x->encap->encap_type;
		spin_unlock_bh(&x->lock);
		if (esp_output_finish(x, skb, encap_type) == -EINPROGRESS)
			return;
	}
	xfrm_output_resume(skb->sk, skb, err);
}

static void esp_write_udp(struct sk_buff *skb, u16 type, __be16 sport,
			  __be16 dport)
{
	struct udphdr *uh = udp_hdr(skb);

	uh->source = sport;
	uh->dest = dport;
	uh->len = htons(skb->len - skb_transport_offset(skb));
	uh->check = 0;
	if (type == UDP_ENCAP_ESPINUDP_NON_IKE)
		memset(uh + 1, 0, 2 * sizeof(__be32));
	*skb_mac_header(skb) = IPPROTO_UDP;
}

int esp_core_output(struct xfrm_state *x, struct sk_buff *skb)
{
	struct crypto_aead *aead = x->data;
	int ivlen = crypto_aead_ivsize(aead);
	int alen = crypto_aead_authsize(aead);
	int blksize = ALIGN(crypto_aead_blocksize(aead), 4);
	int tfclen, padlen, clen, tailen, nfrags, esp_off, adlen, err;
	__be16 sport = 0, dport = 0;
	struct sk_buff *trailer;
	struct ip_esp_hdr *esph;
	unsigned int encap_len;
	struct esp_req r;
	u16 encap_type = 0;
	__be32 seq_lo, seq_hi;
	u64 seqno;
	u8 proto;

	BUILD_BUG_ON(sizeof(struct esp_core_cb) >
		     sizeof_field(struct sk_buff, cb));

	spin_lock_bh(&x->lock);
	if (x->encap) {
		encap_type = x->encap->encap_type;
		sport = x->encap->encap_sport;
		dport = x->encap->encap_dport;
	}
	encap_len = esp_encap_hdrlen(x->encap, false);
	spin_unlock_bh(&x->lock);

	tfclen = esp_tfclen(x, skb);
	clen = ALIGN(skb->len + tfclen + 2, blksize);
	padlen = clen - skb->len - tfclen - 2;
	tailen = tfclen + padlen + 2 + alen;

	/* Private, writable data with room for the trailer: pages we were
	 * handed (sendfile, splice) are copied, never encrypted in place.
	 */
	nfrags = skb_cow_data(skb, tailen, &trailer);
	if (nfrags < 0)
		return nfrags;

	proto = *skb_mac_header(skb);
	esp_fill_trailer(pskb_put(skb, trailer, tailen), tfclen, padlen, proto);

	/* From here on skb->data is the outer network header. */
	skb_push(skb, -skb_network_offset(skb));
	esp_off = skb_transport_offset(skb) + encap_len;

	seq_lo = htonl(XFRM_SKB_CB(skb)->seq.output.low);
	seq_hi = htonl(XFRM_SKB_CB(skb)->seq.output.hi);
	seqno = XFRM_SKB_CB(skb)->seq.output.low +
		((u64)XFRM_SKB_CB(skb)->seq.output.hi << 32);

	esph = (struct ip_esp_hdr *)(skb->data + esp_off);
	esph->spi = x->id.spi;
	esph->seq_no = seq_lo;
	if (encap_type == UDP_ENCAP_ESPINUDP ||
	    encap_type == UDP_ENCAP_ESPINUDP_NON_IKE)
		esp_write_udp(skb, encap_type, sport, dport);
	else
		*skb_mac_header(skb) = IPPROTO_ESP;

	err = esp_req_alloc(aead, nfrags + 1, &r);
	if (err)
		return err;
	adlen = esp_req_sg(&r, x, skb, esph->spi, seq_lo, seq_hi, nfrags + 1,
			   esp_off + sizeof(*esph), skb->len - esp_off -
			   sizeof(*esph));
	if (adlen < 0) {
		kfree(r.buf);
		return adlen;
	}

	/* The IV generator turns the sequence number into the IV. */
	memset(r.iv, 0, ivlen);
	if (ivlen) {
		__be64 nseq = cpu_to_be64(seqno);
		int n = min_t(int, ivlen, sizeof(nseq));

		memcpy(r.iv + ivlen - n, (u8 *)&nseq + sizeof(nseq) - n, n);
	}

	ESP_CORE_CB(skb)->req_buf = r.buf;
	aead_request_set_callback(r.req, 0, esp_output_done, skb);
	aead_request_set_crypt(r.req, r.sg, r.sg, ivlen + clen, r.iv);
	aead_request_set_ad(r.req, adlen);

	err = crypto_aead_encrypt(r.req);
	if (err == -EINPROGRESS)
		return err;
	kfree(r.buf);
	if (err)
		return err == -ENOSPC ? -ENOBUFS : err;
	return esp_output_finish(x, skb, encap_type);
}
EXPORT_SYMBOL_GPL(esp_core_output);
