/* SPDX-License-Identifier: GPL-2.0 */
/* Private to the ESP transform in net/xfrm/esp_*.c. */
#ifndef _NET_XFRM_ESP_CORE_H
#define _NET_XFRM_ESP_CORE_H

#include <crypto/aead.h>
#include <linux/scatterlist.h>
#include <net/espintcp_esp.h>
#include <net/xfrm.h>

/* skb->cb while a crypto request is in flight: XFRM's own block first (the
 * core reads the sequence numbers from it on resumption), then ours.
 */
struct esp_core_cb {
	struct xfrm_skb_cb xfrm;
	void *req_buf;
};

#define ESP_CORE_CB(skb) ((struct esp_core_cb *)&((skb)->cb[0]))

/* Associated data: SPI, [high sequence bits,] low sequence bits. */
#define ESP_AD_MAX (3 * sizeof(__be32))

/* One allocation per packet, carved up by esp_req_alloc(). */
struct esp_req {
	void *buf;			/* what to kfree() */
	struct aead_request *req;
	__be32 *ad;			/* ESP_AD_MAX bytes */
	u8 *iv;				/* crypto_aead_ivsize() bytes */
	struct scatterlist *sg;		/* nsg entries, sg[0] is the AD */
};

int esp_req_alloc(struct crypto_aead *aead, int nsg, struct esp_req *r);

/* Build the AD and fill @r->sg: AD, then @len bytes of @skb from @offset. */
int esp_req_sg(struct esp_req *r, struct xfrm_state *x, struct sk_buff *skb,
	       __be32 spi, __be32 seq_lo, __be32 seq_hi, int nsg, int offset,
	       int len);

/* Bytes between the outer IP header and the ESP header for an encapsulation,
 * in sent (@rx false) or received packets.
 */
unsigned int esp_encap_hdrlen(const struct xfrm_encap_tmpl *encap, bool rx);

/* TCP encapsulation (net/xfrm/esp_tcp.c). */
int esp_tcp_init(void);
void esp_tcp_exit(void);
int esp_tcp_init_state(struct xfrm_state *x);
void esp_tcp_destroy_state(struct xfrm_state *x);
void esp_tcp_output(struct xfrm_state *x, struct sk_buff *skb);

#endif /* _NET_XFRM_ESP_CORE_H */
