// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp receive path: a strparser splits the TCP stream into RFC 9329
 * messages; IKE messages wait in a per-socket queue for recvmsg() (one
 * message per call), ESP messages go to XFRM, keepalives are dropped.
 */

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <net/espintcp_compat.h>
#include <net/inet_common.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/ipv6_stubs.h>
#include <net/tcp.h>
#include <net/xfrm.h>

#include "espintcp.h"

static int espintcp_parse(struct strparser *strp, struct sk_buff *skb)
{
	struct strp_msg *rxm = strp_msg(skb);
	__be16 blen;
	u16 len;

	if (skb->len < rxm->offset + ESPINTCP_LEN_SIZE)
		return 0;

	if (skb_copy_bits(skb, rxm->offset, &blen, sizeof(blen)))
		return -EPROTO;

	/* RFC 9329 section 3: Length 0 and 1 are fatal. */
	len = be16_to_cpu(blen);
	if (len < ESPINTCP_LEN_SIZE)
		return -EPROTO;
	return len;
}

/* Wake poll and recvmsg waiters through TCP's own readable callback. */
static void espintcp_wake_readers(struct espintcp_ctx *ctx)
{
	ctx->saved_data_ready(ctx->sk);
}

static void espintcp_queue_ike(struct espintcp_ctx *ctx, struct sk_buff *skb,
			       unsigned int off, unsigned int len)
{
	struct sock *sk = ctx->sk;
	struct sk_buff *msg;
	bool queued = false;

	/* Copy out of the TCP skbs: they may be far larger than the message,
	 * and the copy is what we charge against SO_RCVBUF.
	 */
	msg = alloc_skb(len, GFP_ATOMIC);
	if (!msg || skb_copy_bits(skb, off, skb_put(msg, len), len)) {
		kfree_skb(msg);
		ESPINTCP_INC(ctx, ike_rx_drops);
		return;
	}

	/* Admitted while the queue is below the limit, as datagram sockets
	 * do: a message whose copy alone exceeds SO_RCVBUF (up to 65533 bytes
	 * are allowed) still reaches an IKE daemon that keeps up.
	 */
	spin_lock_bh(&ctx->ike_rxq.lock);
	if (ctx->ike_rxq_mem < READ_ONCE(sk->sk_rcvbuf)) {
		ctx->ike_rxq_mem += msg->truesize;
		__skb_queue_tail(&ctx->ike_rxq, msg);
		queued = true;
	}
	spin_unlock_bh(&ctx->ike_rxq.lock);

	if (!queued) {
		kfree_skb(msg);
		ESPINTCP_INC(ctx, ike_rx_drops);
		return;
	}
	ESPINTCP_INC(ctx, ike_rx);
	espintcp_wake_readers(ctx);
}

static bool espintcp_sk_is_v6(const struct sock *sk)
{
#if IS_ENABLED(CONFIG_IPV6)
	return sk->sk_family == AF_INET6 &&
	       !ipv6_addr_v4mapped(&sk->sk_v6_daddr);
#else
	return false;
#endif
}

/* Give the packet a well-formed link-layer header of its ingress device: after
 * tunnel-mode decapsulation it is received again on that device, where packet
 * sockets (tcpdump) push back to the MAC header. The device's own header
 * addressed to itself, or none where the device has none.
 */
static void espintcp_build_l2(struct sk_buff *nskb, struct net_device *dev)
{
	int hlen;

	/* create() may push its header and still fail (a GRE device without
	 * a remote address has no destination to put in it): then none.
	 */
	if (dev->header_ops && dev->hard_header_len &&
	    skb_headroom(nskb) >= LL_RESERVED_SPACE(dev) &&
	    dev_hard_header(nskb, dev, ntohs(nskb->protocol), dev->dev_addr,
			    NULL, nskb->len) < 0)
		__skb_pull(nskb, skb_network_offset(nskb));
	hlen = skb_network_offset(nskb);
	skb_reset_mac_header(nskb);
	nskb->mac_len = hlen;
	__skb_pull(nskb, hlen);
}

/* When the message was complete: the latest arrival time of the segments it
 * came in (the head and its frag_list), as IP reassembly stamps a datagram
 * with its last fragment's. The inner packet's SO_TIMESTAMP then says when
 * it arrived, as for ESP over UDP, whose decrypted packet is the received
 * one, and not when it was read (ping's round trip is measured with it).
 * Zero when nobody asked for receive timestamps: stamped when read, then.
 */
static ktime_t espintcp_msg_tstamp(struct sk_buff *skb)
{
	ktime_t t = skb_tstamp(skb);
	struct sk_buff *frag;

	skb_walk_frags(skb, frag)
		t = max(t, skb_tstamp(frag));
	return t;
}

/* Build the private skb that include/net/espintcp.h promises the ESP types:
 * [IP header][struct espintcp_encaphdr][ESP], copied out of the stream so
 * that decryption in place can never touch pages shared with the page cache
 * or another skb, with headers describing the connection. Called under
 * rcu_read_lock() with BH disabled; the skb holds a reference on its route,
 * which outlives this RCU section in asynchronous crypto and in XFRM's
 * transport queue.
 */
static struct sk_buff *espintcp_build_esp(struct espintcp_ctx *ctx,
					  struct sk_buff *skb,
					  unsigned int off, unsigned int len)
{
	const bool v6 = espintcp_sk_is_v6(ctx->sk);
	const unsigned int iphlen = v6 ? sizeof(struct ipv6hdr) :
					 sizeof(struct iphdr);
	const unsigned int hlen = iphlen + sizeof(struct espintcp_encaphdr);
	struct sock *sk = ctx->sk;
	struct net *net = sock_net(sk);
	struct espintcp_encaphdr *eh;
	struct dst_entry *rx_dst;
	struct net_device *dev;
	struct sk_buff *nskb;

	nskb = alloc_skb(LL_MAX_HEADER + hlen + len, GFP_ATOMIC);
	if (!nskb)
		return NULL;
	skb_reserve(nskb, LL_MAX_HEADER + hlen);
	if (skb_copy_bits(skb, off, skb_put(nskb, len), len)) {
		kfree_skb(nskb);
		return NULL;
	}
	skb_reset_transport_header(nskb);

	eh = skb_push(nskb, sizeof(*eh));
	eh->source = inet_sk(sk)->inet_dport;
	eh->dest = inet_sk(sk)->inet_sport;
	eh->reserved = 0;

	/* The segment's ingress device, for routing and policy. */
	dev = dev_get_by_index_rcu(net, skb->skb_iif);
	if (!dev)
		dev = net->loopback_dev;
	nskb->dev = dev;
	nskb->skb_iif = dev->ifindex;

	/* The connection's own input route, as TCP's early demux uses it:
	 * without one XFRM looks a route up, and input routing refuses
	 * loopback addresses.
	 */
	rx_dst = rcu_dereference(sk->sk_rx_dst);
	if (rx_dst && READ_ONCE(sk->sk_rx_dst_ifindex) == dev->ifindex)
		rx_dst = dst_check(rx_dst, READ_ONCE(sk->sk_rx_dst_cookie));
	else
		rx_dst = NULL;
	if (rx_dst && dst_hold_safe(rx_dst))
		skb_dst_set(nskb, rx_dst);
	nskb->mark = skb->mark;
	nskb->tstamp = espintcp_msg_tstamp(skb);
	nskb->pkt_type = PACKET_HOST;
	nskb->ip_summed = CHECKSUM_NONE;

	if (v6) {
#if IS_ENABLED(CONFIG_IPV6)
		struct ipv6hdr *ip6h = skb_push(nskb, sizeof(*ip6h));

		memset(ip6h, 0, sizeof(*ip6h));
		ip6h->version = 6;
		ip6h->payload_len = htons(nskb->len - sizeof(*ip6h));
		ip6h->nexthdr = IPPROTO_ESP;
		ip6h->hop_limit = 64;
		ip6h->saddr = sk->sk_v6_daddr;
		ip6h->daddr = sk->sk_v6_rcv_saddr;
		nskb->protocol = htons(ETH_P_IPV6);
		memset(IP6CB(nskb), 0, sizeof(*IP6CB(nskb)));
		IP6CB(nskb)->iif = dev->ifindex;
		IP6CB(nskb)->nhoff = offsetof(struct ipv6hdr, nexthdr);
#endif
	} else {
		struct iphdr *iph = skb_push(nskb, sizeof(*iph));

		memset(iph, 0, sizeof(*iph));
		iph->version = 4;
		iph->ihl = sizeof(*iph) / 4;
		iph->tot_len = htons(nskb->len);
		iph->ttl = 64;
		iph->protocol = IPPROTO_ESP;
		iph->saddr = sk->sk_daddr;
		iph->daddr = sk->sk_rcv_saddr;
		ip_send_check(iph);
		nskb->protocol = htons(ETH_P_IP);
		memset(IPCB(nskb), 0, sizeof(*IPCB(nskb)));
		IPCB(nskb)->iif = dev->ifindex;
	}
	skb_reset_network_header(nskb);
	espintcp_build_l2(nskb, dev);
	__skb_pull(nskb, hlen);
	return nskb;
}

static void espintcp_deliver_esp(struct espintcp_ctx *ctx, struct sk_buff *skb,
				 unsigned int off, unsigned int len)
{
	struct sk_buff *nskb;

	/* strparser runs us in softirq, or from its work item in process
	 * context for what waited in the backlog of an owned socket: XFRM
	 * input wants BH disabled, and the ingress device and the socket's
	 * route are RCU-protected.
	 *
	 * XFRM decrypts here, or later from its crypto completion, and never
	 * delivers the inner packet under the socket lock we hold: transport
	 * mode hands it over through XFRM's per-CPU transport queue
	 * (xfrm_trans_queue(), with netfilter, see espintcp_compat.h),
	 * tunnel mode through the GRO cells. So no hop of our own, and
	 * nothing of this module is left to run once we return.
	 */
	local_bh_disable();
	rcu_read_lock();
	nskb = espintcp_build_esp(ctx, skb, off, len);
	if (nskb) {
		if (nskb->protocol == htons(ETH_P_IPV6))
			ipv6_stub->xfrm6_rcv_encap(nskb, IPPROTO_ESP, 0,
						   TCP_ENCAP_ESPINTCP);
		else
			xfrm4_rcv_encap(nskb, IPPROTO_ESP, 0,
					TCP_ENCAP_ESPINTCP);
	}
	rcu_read_unlock();
	local_bh_enable();
	if (nskb) {
		ESPINTCP_INC(ctx, esp_rx);
		return;
	}
	ESPINTCP_INC(ctx, esp_rx_drops);
	XFRM_INC_STATS(sock_net(ctx->sk), LINUX_MIB_XFRMINERROR);
}

/* One whole message; runs under the socket lock (owner or BH). */
static void espintcp_rcv(struct strparser *strp, struct sk_buff *skb)
{
	struct espintcp_ctx *ctx = container_of(strp, struct espintcp_ctx, strp);
	struct strp_msg *rxm = strp_msg(skb);
	unsigned int off = rxm->offset + ESPINTCP_LEN_SIZE;
	unsigned int len = rxm->full_len - ESPINTCP_LEN_SIZE;
	__be32 marker;
	u8 byte;

	if (len == ESPINTCP_KEEPALIVE_LEN - ESPINTCP_LEN_SIZE &&
	    !skb_copy_bits(skb, off, &byte, 1) && byte == 0xff) {
		ESPINTCP_INC(ctx, keepalive_rx);
		goto out;
	}

	/* Too short for a marker or an SPI, or a marker with nothing after
	 * it: no IKE message (RFC 9329 section 3) and no ESP either.
	 */
	if (len < ESPINTCP_NON_ESP_MARKER ||
	    skb_copy_bits(skb, off, &marker, sizeof(marker)) ||
	    (len == ESPINTCP_NON_ESP_MARKER && !marker)) {
		ESPINTCP_INC(ctx, bad_rx);
		goto out;
	}

	if (!marker)
		espintcp_queue_ike(ctx, skb, off, len);
	else
		espintcp_deliver_esp(ctx, skb, off, len);
out:
	consume_skb(skb);
}

static void espintcp_abort_parser(struct strparser *strp, int err)
{
	struct espintcp_ctx *ctx = container_of(strp, struct espintcp_ctx, strp);

	/* strparser times out a partial message after SO_RCVTIMEO: that
	 * timeout is meant for recvmsg(), a slow peer is no framing error.
	 */
	if (err == -ETIMEDOUT)
		return;

	strp_stop(strp);
	WRITE_ONCE(ctx->rx_err, err < 0 ? -err : EPROTO);
	set_bit(ESPINTCP_RX_STOPPED, &ctx->flags);

	/* Resetting the connection needs process context. */
	spin_lock_bh(&ctx->esp_txq.lock);
	if (!espintcp_closing(ctx)) {
		set_bit(ESPINTCP_ABORT, &ctx->flags);
		espintcp_tx_kick(ctx);
	}
	spin_unlock_bh(&ctx->esp_txq.lock);
	espintcp_wake_readers(ctx);
}

static int espintcp_read_sock_done(struct strparser *strp, int err)
{
	struct espintcp_ctx *ctx = container_of(strp, struct espintcp_ctx, strp);

	/* End of stream becomes readable only once everything is parsed. */
	if (ctx->sk->sk_shutdown & RCV_SHUTDOWN)
		espintcp_wake_readers(ctx);
	return err;
}

static const struct strp_callbacks espintcp_strp_cb = {
	.parse_msg	= espintcp_parse,
	.rcv_msg	= espintcp_rcv,
	.abort_parser	= espintcp_abort_parser,
	.read_sock_done	= espintcp_read_sock_done,
};

int espintcp_rx_init(struct espintcp_ctx *ctx)
{
	skb_queue_head_init(&ctx->ike_rxq);
	return strp_init(&ctx->strp, ctx->sk, &espintcp_strp_cb);
}

/* close(): stop parsing and drop what userspace did not read. */
void espintcp_rx_stop(struct espintcp_ctx *ctx)
{
	struct sock *sk = ctx->sk;

	lock_sock(sk);
	strp_stop(&ctx->strp);
	release_sock(sk);
	strp_done(&ctx->strp);

	spin_lock_bh(&ctx->ike_rxq.lock);
	ctx->ike_rxq_mem = 0;
	spin_unlock_bh(&ctx->ike_rxq.lock);
	skb_queue_purge(&ctx->ike_rxq);
}

/* strparser reads the TCP queue again only once it holds all that the
 * message in progress still needs (need_bytes). TCP queues no more than its
 * receive window lets the peer send, which the queue's own memory shrinks,
 * and drops segments once that memory reaches SO_RCVBUF (small segments
 * cost far more than their length): with a receive buffer that is small
 * for the message (up to 64 KiB), one of the two stops the peer first, and
 * neither side would ever move. When the queue's memory is near its limit,
 * or what is queued and what the window still admits cannot complete the
 * message, let strparser take what is there: TCP's memory is freed, the
 * window opens again. Under the socket's BH lock, with the socket not
 * owned (strparser's work reads regardless of need_bytes).
 *
 * need_bytes is strparser's. It writes it under the BH lock too
 * (strp_data_ready()) or with the socket owned (its work); we write it
 * only under the BH lock with the socket not owned, so never at the same
 * time as strparser. Its exported strp_check_rcv() would read from the
 * work item instead: measured, that is too late when small segments fill
 * the queue's memory (TCP drops the next ones and waits for its
 * retransmission timer), and ike_longer_than_window_small_segments stalls
 * on every fixture.
 */
static void espintcp_rx_unstall(struct espintcp_ctx *ctx)
{
	struct sock *sk = ctx->sk;
	u32 need = ctx->strp.need_bytes;

	if (!need || sock_owned_by_user_nocheck(sk))
		return;
	if (tcp_rmem_pressure(sk) ||
	    (u32)tcp_inq(sk) + tcp_receive_window(tcp_sk(sk)) < need) {
		ESPINTCP_INC(ctx, rx_unstall);
		ctx->strp.need_bytes = 0;
	}
}

void espintcp_sk_data_ready(struct sock *sk)
{
	struct espintcp_ctx *ctx;

	rcu_read_lock();
	ctx = rcu_dereference(inet_csk(sk)->icsk_ulp_data);
	if (ctx) {
		espintcp_rx_unstall(ctx);
		strp_data_ready(&ctx->strp);
	}
	rcu_read_unlock();
}

/* Nothing more will ever be queued: an error (reported or not), the parser
 * stopped for good, or the end of the stream with every message that can
 * still complete parsed. What the TCP queue holds then is the head of a
 * message the peer never finished (RFC 9329: discarded), or less than
 * strparser needs to finish the one it holds.
 */
static bool espintcp_rx_done(struct espintcp_ctx *ctx)
{
	struct sock *sk = ctx->sk;
	unsigned int need;
	int inq;

	if (READ_ONCE(ctx->rx_err) || READ_ONCE(sk->sk_err) ||
	    test_bit(ESPINTCP_RX_STOPPED, &ctx->flags))
		return true;
	if (!(READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN))
		return false;
	inq = tcp_inq(sk);
	need = READ_ONCE(ctx->strp.need_bytes);
	return !inq || (need && inq < need);
}

static int espintcp_rx_error(struct espintcp_ctx *ctx)
{
	int rx_err = xchg(&ctx->rx_err, 0);
	int err = sock_error(ctx->sk);

	return err ? : -rx_err;
}

int espintcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
		     int flags, int *addr_len)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);
	DEFINE_WAIT_FUNC(wait, woken_wake_function);
	struct sk_buff *skb;
	int copied, err;
	long timeo;

	if (flags & ~(MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC | MSG_WAITALL |
		      MSG_NOSIGNAL | MSG_CMSG_COMPAT))
		return -EOPNOTSUPP;

	timeo = sock_rcvtimeo(sk, flags & MSG_DONTWAIT);
	lock_sock(sk);
	for (;;) {
		skb = skb_peek(&ctx->ike_rxq);
		if (skb)
			break;
		if (espintcp_rx_done(ctx)) {
			err = espintcp_rx_error(ctx);
			goto out;
		}
		if (!timeo) {
			err = -EAGAIN;
			goto out;
		}
		if (signal_pending(current)) {
			err = sock_intr_errno(timeo);
			goto out;
		}
		add_wait_queue(sk_sleep(sk), &wait);
		sk_wait_event(sk, &timeo,
			      !skb_queue_empty_lockless(&ctx->ike_rxq) ||
			      espintcp_rx_done(ctx), &wait);
		remove_wait_queue(sk_sleep(sk), &wait);
	}

	/* The queue only shrinks under the socket lock, which we hold. */
	copied = min_t(size_t, len, skb->len);
	err = skb_copy_datagram_msg(skb, 0, msg, copied);
	if (err)
		goto out;
	if (copied < skb->len)
		msg->msg_flags |= MSG_TRUNC;
	err = (flags & MSG_TRUNC) ? skb->len : copied;

	if (!(flags & MSG_PEEK)) {
		spin_lock_bh(&ctx->ike_rxq.lock);
		__skb_unlink(skb, &ctx->ike_rxq);
		ctx->ike_rxq_mem -= skb->truesize;
		spin_unlock_bh(&ctx->ike_rxq.lock);
		consume_skb(skb);
	}
out:
	release_sock(sk);
	return err;
}

__poll_t espintcp_poll(struct file *file, struct socket *sock,
		       poll_table *wait)
{
	__poll_t mask = tcp_poll(file, sock, wait);
	struct sock *sk = sock->sk;
	struct espintcp_ctx *ctx;

	rcu_read_lock();
	ctx = rcu_dereference(inet_csk(sk)->icsk_ulp_data);
	if (ctx) {
		/* Raw bytes in the TCP queue are not a message. */
		mask &= ~(EPOLLIN | EPOLLRDNORM);
		if (!skb_queue_empty_lockless(&ctx->ike_rxq) ||
		    espintcp_rx_done(ctx))
			mask |= EPOLLIN | EPOLLRDNORM;
		if (READ_ONCE(ctx->rx_err))
			mask |= EPOLLERR;
		/* Writable means a send() would not wait for the slot. */
		if (READ_ONCE(ctx->tx.skb))
			mask &= ~(EPOLLOUT | EPOLLWRNORM);
	}
	rcu_read_unlock();
	return mask;
}
