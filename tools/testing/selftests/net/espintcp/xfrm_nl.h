/* SPDX-License-Identifier: GPL-2.0 */
/*
 * XFRM netlink requests as a key manager sends them, shared by the IKE
 * driver (ike/) and the fuzzer: build a request, send it, wait for its ACK.
 */

#ifndef _ESPINTCP_XFRM_NL_H
#define _ESPINTCP_XFRM_NL_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>

#ifndef TCP_ENCAP_ESPINTCP
#define TCP_ENCAP_ESPINTCP 7
#endif

struct xfrm_nlreq {
	struct nlmsghdr nh;
	char buf[2048];
};

/* A bound NETLINK_XFRM socket, or -1 with errno set. */
int xfrm_nl_open(void);
/* Start a request of @type whose fixed header is @hdrlen bytes, zeroed. */
void xfrm_nl_start(struct xfrm_nlreq *r, int type, size_t hdrlen);
/* Append an attribute; copies @data unless NULL. Returns its payload. */
void *xfrm_nl_attr(struct xfrm_nlreq *r, int type, const void *data, int len);
/* Send @r and wait for its ACK: 0 or a negative errno. */
int xfrm_nl_transact(int nl, struct xfrm_nlreq *r);
/* No byte or packet limit. */
void xfrm_nl_no_limits(struct xfrm_lifetime_cfg *lft);
/* Delete the ESP SA @spi (host order) from @src to @dst. */
int xfrm_nl_sa_del(int nl, int family, const xfrm_address_t *src,
		   const xfrm_address_t *dst, uint32_t spi);

#endif /* _ESPINTCP_XFRM_NL_H */
