/* SPDX-License-Identifier: GPL-2.0 */
/*
 * espintcp: RFC 9329 TCP encapsulation of IKE and ESP, in-kernel interface
 * between the TCP upper layer protocol (net/xfrm/espintcp_*.c) and the ESP
 * xfrm types (net/ipv4/esp4.c, net/ipv6/esp6.c).
 *
 * Receive: every ESP message read from an espintcp stream is handed to XFRM
 * as encapsulation type TCP_ENCAP_ESPINTCP in a private, linear skb laid out
 * exactly like ESP-in-UDP after xfrm4/6_udp_encap_rcv():
 *
 *   network header   IPv4 header (ihl 5) or IPv6 header (no extension
 *                    headers) with protocol/nexthdr IPPROTO_ESP, source =
 *                    the peer's address, destination = ours
 *   encap header     struct espintcp_encaphdr: the connection's ports,
 *                    source = peer, dest = ours (all other bytes zero)
 *   transport header ESP header (SPI), skb->data points here
 *
 * The skb owns its data (never cloned, no page frags): the ESP type may
 * decrypt it in place. skb->dev is never NULL; the MAC header is a header of
 * that device addressed to itself (or empty), so that packet sockets on it
 * see a well-formed frame once the packet is decapsulated.
 *
 * Transmit: the ESP type finds the socket of an SA with espintcp_ctx_lookup()
 * and keeps the returned context (not the socket) for later packets; a
 * context whose socket was closed reports !espintcp_ctx_alive() and must be
 * put and looked up again. A context reference pins neither the socket nor
 * its network namespace.
 */
#ifndef _NET_ESPINTCP_H
#define _NET_ESPINTCP_H

#include <linux/skbuff.h>
#include <linux/types.h>
#include <net/xfrm.h>

/* Length field of RFC 9329 section 3: 16 bits, counts itself. */
#define ESPINTCP_LEN_SIZE	2
#define ESPINTCP_MAX_MSG	0xffff
/* Largest IKE message userspace may send: the marker is part of it. */
#define ESPINTCP_MAX_PAYLOAD	(ESPINTCP_MAX_MSG - ESPINTCP_LEN_SIZE)

/* Encapsulation header between IP and ESP on the receive path (see above). */
struct espintcp_encaphdr {
	__be16	source;
	__be16	dest;
	__be32	reserved;
};

struct espintcp_ctx;

/*
 * espintcp_ctx_lookup - find the espintcp socket of an outbound TCP-encap SA
 * @net: the SA's network namespace
 * @x: the SA; x->encap must be of type TCP_ENCAP_ESPINTCP. The socket is the
 *     established TCP connection from x->props.saddr:encap_sport to
 *     x->id.daddr:encap_dport in x->props.family that has the espintcp ULP.
 *
 * Any context. Returns a referenced context, or NULL when no such socket
 * exists (or it is closing).
 */
struct espintcp_ctx *espintcp_ctx_lookup(struct net *net,
					 const struct xfrm_state *x);

/* True while the context's socket is open; any context, no lock needed. */
bool espintcp_ctx_alive(const struct espintcp_ctx *ctx);

/* Drop a reference from espintcp_ctx_lookup(); any context. */
void espintcp_ctx_put(struct espintcp_ctx *ctx);

/*
 * espintcp_xmit - queue one framed ESP message on the context's socket
 * @ctx: from espintcp_ctx_lookup()
 * @skb: skb->data points at the 2-byte big-endian Length, which must equal
 *       skb->len, followed by the ESP packet (non-zero SPI)
 *
 * Any context (softirq, process, with or without the socket lock held by the
 * caller's task). Always consumes @skb. An skb charged to a local socket
 * stays charged until it is written to the stream, so that its sender is
 * throttled by its own budget and woken by the skb's destructor. Returns 0
 * when queued; -ENOTCONN when the socket is closing, -ENOBUFS when the ESP
 * queue is full (congestion: its limit in bytes follows the socket's send
 * buffer), -EINVAL for a malformed frame. Failures are counted in the
 * socket's counters; the caller accounts them in the namespace's MIBs (it
 * knows the SA's namespace): -ENOBUFS as a discard, others as XfrmOutError.
 */
int espintcp_xmit(struct espintcp_ctx *ctx, struct sk_buff *skb);

#endif /* _NET_ESPINTCP_H */
