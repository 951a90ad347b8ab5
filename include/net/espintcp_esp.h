/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The ESP transform (RFC 4303) shared by the IPv4 and IPv6 xfrm types
 * (net/ipv4/esp4.c, net/ipv6/esp6.c). Everything that does not depend on the
 * address family lives in net/xfrm/esp_*.c and is exported from espintcp.ko;
 * the family modules only describe their mode overhead and register handlers.
 *
 * Encapsulations: none, UDP (RFC 3948: espinudp, espinudp-nonike) and TCP
 * (RFC 9329: espintcp, sent through the espintcp socket that owns the SA's
 * addresses and encapsulation ports).
 */
#ifndef _NET_ESPINTCP_ESP_H
#define _NET_ESPINTCP_ESP_H

#include <linux/netlink.h>
#include <linux/skbuff.h>
#include <net/xfrm.h>

/* esp_core_init_state - set up an ESP SA
 * @x: the SA; x->data becomes its crypto_aead (the XFRM core relies on that
 *     in xfrm_state_mtu())
 * @mode_hdrlen: bytes the family's outer mode adds in front of the ESP header
 *     (outer IP header in tunnel mode, BEET pseudo header room)
 * @extack: reason for a refusal
 */
int esp_core_init_state(struct xfrm_state *x, unsigned int mode_hdrlen,
			struct netlink_ext_ack *extack);
void esp_core_destroy_state(struct xfrm_state *x);

/* xfrm_type->output and ->input for both families. */
int esp_core_output(struct xfrm_state *x, struct sk_buff *skb);
int esp_core_input(struct xfrm_state *x, struct sk_buff *skb);

/* esp_core_rcv_cb - the xfrm4/6_protocol cb_handler for both families
 *
 * Called once XFRM is done with a received packet (@err 0) or drops it. A
 * negative return drops it without counting an error: used for RFC 4303
 * dummy packets, authenticated and replay-checked like any other.
 */
int esp_core_rcv_cb(struct sk_buff *skb, int err);

/* esp_core_may_register - may an ESP type be registered for @family?
 *
 * -EBUSY (and a kernel message naming @modname) when another ESP type, such
 * as the distribution's esp4/esp6, is registered already.
 */
int esp_core_may_register(unsigned short family, const char *modname);

#endif /* _NET_ESPINTCP_ESP_H */
