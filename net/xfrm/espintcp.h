/* SPDX-License-Identifier: GPL-2.0 */
/*
 * espintcp: private state of the RFC 9329 TCP upper layer protocol.
 *
 * Locking, in the order they nest:
 *  - the socket lock (lock_sock()) serialises the transmit slot, the strparser
 *    and user calls (sendmsg, recvmsg); the tx work never waits for it
 *    behind an owner or ahead of a woken waiter (espintcp_tx.c), its
 *    spinlock guards the TX_DEFERRED and TX_HANDOFF hand-over;
 *  - the ESP queue's lock (ctx->esp_txq.lock, BH-safe) also guards
 *    ESPINTCP_CLOSING against queueing ESP or arming the tx work, so that
 *    close() can stop both for good with one lock per transmitted packet;
 *  - the IKE receive queue's lock.
 *
 * Lifetime: the socket holds one reference on the context from init() to the
 * ULP release() at socket destruction; every ESP type cache holds one more.
 * close() tears everything down in process context before the TCP close, so
 * release() (which may run in softirq) only drops the socket's reference.
 * Contexts are freed after an RCU grace period.
 */
#ifndef _NET_XFRM_ESPINTCP_PRIV_H
#define _NET_XFRM_ESPINTCP_PRIV_H

#include <linux/skbuff.h>
#include <linux/workqueue.h>
#include <net/espintcp.h>
#include <net/sock.h>
#include <net/strparser.h>

/* RFC 9329 section 3: a keepalive is Length 3 followed by one 0xFF byte. */
#define ESPINTCP_KEEPALIVE_LEN	3
#define ESPINTCP_NON_ESP_MARKER	4
/* When TCP refuses memory with nothing in flight, try again after this. */
#define ESPINTCP_TX_RETRY	(HZ / 10)
/* The tx work flushes the socket's backlog once it has written this much
 * into TCP since the last flush, as much as tcp_sendmsg_locked() may write
 * between two of its own (16 skbs of up to 64 KB), or once this long has
 * passed, whichever comes first.
 */
#define ESPINTCP_TX_FLUSH_BYTES	(16 * 65536)
#define ESPINTCP_TX_FLUSH_TIME	(HZ / 10)
/* How much ESP may wait while the socket or the slot is busy, in truesize:
 * the socket's send buffer (sk_sndbuf, autotuned by TCP) for ESP that no
 * local socket is charged for (forwarded traffic), this many times as much
 * for ESP that a local socket is charged for. The latter is bounded by its
 * sender's own budget (TCP small queues, SO_SNDBUF) long before this; the
 * factor only caps many local senders together.
 */
#define ESPINTCP_ESP_TXQ_LOCAL	4
/* Never less than this, though: under TCP memory pressure TCP moderates
 * sk_sndbuf down to SOCK_MIN_SNDBUF (a few KiB, less than three full-sized
 * ESP packets' truesize), and a burst must still fit while the tx work
 * waits for memory.
 */
#define ESPINTCP_ESP_TXQ_MIN	(64 * 1024)

enum {
	ESPINTCP_CLOSING,	/* close() started: queue nothing, arm nothing */
	ESPINTCP_ABORT,		/* fatal framing error: tx work resets the connection */
	ESPINTCP_RX_STOPPED,	/* parser stopped for good: no message will follow */
	/* Set by the socket lock's owner or under its spinlock
	 * (sk->sk_lock.slock); cleared only by espintcp_release_cb(),
	 * under it, before ownership is dropped. See espintcp_tx.c.
	 */
	ESPINTCP_TX_DEFERRED,	/* tx work to run at the owner's release_sock() */
	ESPINTCP_TX_HANDOFF,	/* a lock waiter was woken: the tx work lets it in */
};

/* Counters reported through the ULP diag hook; see uapi/linux/espintcp.h. */
struct espintcp_stats {
	u64	ike_rx;		/* IKE messages queued for userspace */
	u64	ike_tx;		/* IKE messages fully written to TCP */
	u64	esp_rx;		/* ESP messages handed to XFRM */
	u64	esp_tx;		/* ESP messages fully written to TCP */
	u64	keepalive_rx;	/* NAT keepalives dropped (RFC 9329 3) */
	u64	ike_rx_drops;	/* receive queue full (SO_RCVBUF) or no memory */
	u64	esp_rx_drops;	/* no memory for the private copy */
	u64	bad_rx;		/* too short for a marker or an SPI */
	u64	esp_tx_drops;	/* ESP queue full, or dropped at close */
	u64	tx_work;	/* runs of the tx work */
	u64	esp_tx_congestion; /* of esp_tx_drops: ESP queue full */
	u64	rx_unstall;	/* parser let in early: window too small */
};

/* The one message being written to TCP. Its bytes never interleave with any
 * other message's; it is owned by whoever holds the socket lock.
 */
struct espintcp_slot {
	struct sk_buff	*skb;
	unsigned int	offset;	/* bytes of skb already in TCP */
	bool		ike;
};

struct espintcp_ctx {
	struct sock		*sk;
	refcount_t		refcnt;
	unsigned long		flags;

	/* receive */
	struct strparser	strp;
	struct sk_buff_head	ike_rxq;
	unsigned int		ike_rxq_mem;	/* truesize queued, under ike_rxq.lock */
	int			rx_err;		/* fatal framing error, positive errno */

	/* transmit */
	struct espintcp_slot	tx;
	struct sk_buff_head	esp_txq;
	unsigned long		esp_txq_bytes;	/* truesize queued, under esp_txq.lock */
	/* The limit for ESP no local socket is charged for: written under
	 * esp_txq.lock, read without it (as is esp_txq_bytes) to decide
	 * whether a local sender's skb keeps its charge (espintcp_tx.c).
	 */
	unsigned long		esp_txq_budget;
	atomic_t		ike_waiters;	/* senders wanting the slot */
	bool			tx_last_ike;	/* kind of the last completed message */
	bool			tx_in_tcp;	/* in TCP's send, socket lock owned */
	struct delayed_work	tx_work;

	struct espintcp_stats	stats;

	void			(*saved_data_ready)(struct sock *sk);
	void			(*saved_write_space)(struct sock *sk);
	struct proto		*saved_prot;
	const struct proto_ops	*saved_ops;
	struct rcu_head		rcu;
};

/* Counters are written by one serialised path each and read racily. */
static inline void espintcp_inc(u64 *counter)
{
	WRITE_ONCE(*counter, *counter + 1);
}

#define ESPINTCP_INC(ctx, field)	espintcp_inc(&(ctx)->stats.field)

static inline struct espintcp_ctx *espintcp_ctx(const struct sock *sk)
{
	const struct inet_connection_sock *icsk = inet_csk(sk);

	return (__force struct espintcp_ctx *)icsk->icsk_ulp_data;
}

static inline bool espintcp_closing(const struct espintcp_ctx *ctx)
{
	return test_bit(ESPINTCP_CLOSING, &ctx->flags);
}

/* espintcp_rx.c */
int espintcp_rx_init(struct espintcp_ctx *ctx);
void espintcp_rx_stop(struct espintcp_ctx *ctx);
void espintcp_sk_data_ready(struct sock *sk);
int espintcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
		     int flags, int *addr_len);
__poll_t espintcp_poll(struct file *file, struct socket *sock,
		       poll_table *wait);

/* espintcp_tx.c */
void espintcp_tx_init(struct espintcp_ctx *ctx);
void espintcp_tx_stop(struct espintcp_ctx *ctx);
void espintcp_tx_kick(struct espintcp_ctx *ctx);
void espintcp_tx_retry(struct espintcp_ctx *ctx);
void espintcp_write_space(struct sock *sk);
void espintcp_release_cb(struct sock *sk);
int espintcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size);

#endif /* _NET_XFRM_ESPINTCP_PRIV_H */
