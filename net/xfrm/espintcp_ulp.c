// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp: RFC 9329 TCP encapsulation of IKE and ESP, as the TCP upper layer
 * protocol "espintcp". This file attaches the ULP to a socket, tears it down
 * on close and finds the socket of an SA for the ESP types.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/netlink.h>
#include <net/espintcp_compat.h>
#include <net/inet_common.h>
#include <net/inet6_hashtables.h>
#include <net/inet_hashtables.h>
#include <net/tcp.h>
#include <net/transp_v6.h>
#include <uapi/linux/espintcp.h>

#include "esp_core.h"
#include "espintcp.h"

enum { ESPINTCP_V4, ESPINTCP_V6, ESPINTCP_NFAMILIES };

/* The TCP protocol and socket operations with our receive, transmit, poll,
 * lock release and close. IPv6 socket operations are not exported: they are
 * taken from the first IPv6 socket that attaches, and any later one must
 * match. Being copies made at runtime, they cannot be const (checkpatch's
 * CONST_STRUCT).
 */
static struct proto espintcp_prot[ESPINTCP_NFAMILIES];
static struct proto_ops espintcp_ops[ESPINTCP_NFAMILIES];
static const struct proto_ops *espintcp6_base_ops;
static DEFINE_MUTEX(espintcp6_ops_mutex);

static struct tcp_ulp_ops espintcp_ulp;

static void espintcp_ctx_free_rcu(struct rcu_head *head)
{
	kfree(container_of(head, struct espintcp_ctx, rcu));
}

void espintcp_ctx_put(struct espintcp_ctx *ctx)
{
	if (refcount_dec_and_test(&ctx->refcnt))
		call_rcu(&ctx->rcu, espintcp_ctx_free_rcu);
}
EXPORT_SYMBOL_GPL(espintcp_ctx_put);

bool espintcp_ctx_alive(const struct espintcp_ctx *ctx)
{
	return !espintcp_closing(ctx);
}
EXPORT_SYMBOL_GPL(espintcp_ctx_alive);

/* Take a reference on @sk's context, if @sk is an open espintcp socket. */
static struct espintcp_ctx *espintcp_ctx_get(struct sock *sk)
{
	struct espintcp_ctx *ctx = NULL;

	if (!sk_fullsock(sk) || sk->sk_protocol != IPPROTO_TCP)
		return NULL;

	rcu_read_lock();
	if (READ_ONCE(inet_csk(sk)->icsk_ulp_ops) == &espintcp_ulp) {
		ctx = rcu_dereference(inet_csk(sk)->icsk_ulp_data);
		if (ctx && (espintcp_closing(ctx) ||
			    !refcount_inc_not_zero(&ctx->refcnt)))
			ctx = NULL;
	}
	rcu_read_unlock();
	return ctx;
}

struct espintcp_ctx *espintcp_ctx_lookup(struct net *net,
					 const struct xfrm_state *x)
{
	struct inet_hashinfo *hinfo = espintcp_tcp_hashinfo(net);
	const struct xfrm_encap_tmpl *encap = x->encap;
	struct espintcp_ctx *ctx;
	struct sock *sk;

	if (!encap || encap->encap_type != TCP_ENCAP_ESPINTCP)
		return NULL;

	/* Keys of an established lookup are those of a received segment. */
	rcu_read_lock();
	switch (x->props.family) {
	case AF_INET:
		sk = __inet_lookup_established(net, hinfo,
					       x->id.daddr.a4, encap->encap_dport,
					       x->props.saddr.a4,
					       ntohs(encap->encap_sport), 0, 0);
		break;
#if IS_ENABLED(CONFIG_IPV6)
	case AF_INET6:
		sk = __inet6_lookup_established(net, hinfo,
						&x->id.daddr.in6,
						encap->encap_dport,
						&x->props.saddr.in6,
						ntohs(encap->encap_sport), 0, 0);
		break;
#endif
	default:
		sk = NULL;
	}
	rcu_read_unlock();
	if (!sk)
		return NULL;

	ctx = espintcp_ctx_get(sk);
	sock_gen_put(sk);
	return ctx;
}
EXPORT_SYMBOL_GPL(espintcp_ctx_lookup);

static int espintcp_family(const struct sock *sk)
{
	return sk->sk_family == AF_INET6 ? ESPINTCP_V6 : ESPINTCP_V4;
}

/* SO_RCVLOWAT counts bytes of the TCP stream, and TCP would hold back the
 * parser until that many arrived: a short IKE message would wait for ever.
 */
static int espintcp_set_rcvlowat(struct sock *sk, int val)
{
	return -EOPNOTSUPP;
}

/* TCP's socket operations with message semantics: our poll; no splice
 * from or mmap of the byte stream; SO_PEEK_OFF refused (TCP honours it
 * since 6.10, our recvmsg() has no byte offsets to peek at), SO_RCVLOWAT
 * too.
 */
static void espintcp_build_ops(struct proto_ops *ops,
			       const struct proto_ops *base)
{
	*ops = *base;
	ops->poll = espintcp_poll;
	ops->splice_read = NULL;
	ops->mmap = sock_no_mmap;
	ops->set_peek_off = NULL;
	ops->set_rcvlowat = espintcp_set_rcvlowat;
}

/* Our operations for an IPv6 socket, built from its own the first time. */
static const struct proto_ops *espintcp6_ops(const struct proto_ops *base)
{
	const struct proto_ops *ops = NULL;

	mutex_lock(&espintcp6_ops_mutex);
	if (!espintcp6_base_ops) {
		espintcp_build_ops(&espintcp_ops[ESPINTCP_V6], base);
		espintcp6_base_ops = base;
	}
	if (base == espintcp6_base_ops)
		ops = &espintcp_ops[ESPINTCP_V6];
	mutex_unlock(&espintcp6_ops_mutex);
	return ops;
}

static int espintcp_check_sock(struct sock *sk)
{
	if (sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP)
		return -EOPNOTSUPP;
	if (sk->sk_family != AF_INET && sk->sk_family != AF_INET6)
		return -EOPNOTSUPP;
	if (!sk->sk_socket)
		return -EINVAL;
	/* A listening socket is refused by the ULP core already. */
	if (!((1 << sk->sk_state) & (TCPF_ESTABLISHED | TCPF_CLOSE_WAIT)))
		return -ENOTCONN;
	/* A peek offset (SO_PEEK_OFF) means nothing to message semantics,
	 * and a receive low-water mark would stall the parser.
	 */
	if (READ_ONCE(sk->sk_peek_off) >= 0 || READ_ONCE(sk->sk_rcvlowat) > 1)
		return -EINVAL;
	/* Repair mode (checkpoint/restore) rewrites the queues under us. */
	if (tcp_sk(sk)->repair)
		return -EBUSY;
	/* Someone else (a BPF psock, a tunnel) already owns the callbacks. */
	if (sk->sk_user_data)
		return -EBUSY;
	if (sk->sk_family == AF_INET && sk->sk_prot != &tcp_prot)
		return -EBUSY;
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6 && sk->sk_prot != &tcpv6_prot)
		return -EBUSY;
#endif
	if (!ns_capable(sock_net(sk)->user_ns, CAP_NET_ADMIN))
		return -EPERM;
	return 0;
}

/* Called by setsockopt(TCP_ULP) with the socket lock held. */
static int espintcp_init(struct sock *sk)
{
	const struct proto_ops *ops;
	struct espintcp_ctx *ctx;
	int fam, err;

	err = espintcp_check_sock(sk);
	if (err)
		return err;

	fam = espintcp_family(sk);
	if (fam == ESPINTCP_V6) {
		ops = espintcp6_ops(sk->sk_socket->ops);
		if (!ops)
			return -EBUSY;
	} else {
		if (sk->sk_socket->ops != &inet_stream_ops)
			return -EBUSY;
		ops = &espintcp_ops[ESPINTCP_V4];
	}

	ctx = kzalloc(sizeof(*ctx), sk->sk_allocation);
	if (!ctx)
		return -ENOMEM;

	ctx->sk = sk;
	refcount_set(&ctx->refcnt, 1);
	espintcp_tx_init(ctx);
	err = espintcp_rx_init(ctx);
	if (err) {
		kfree(ctx);
		return err;
	}

	write_lock_bh(&sk->sk_callback_lock);
	ctx->saved_data_ready = sk->sk_data_ready;
	ctx->saved_write_space = sk->sk_write_space;
	ctx->saved_prot = sk->sk_prot;
	ctx->saved_ops = sk->sk_socket->ops;
	rcu_assign_pointer(inet_csk(sk)->icsk_ulp_data, ctx);
	sk->sk_data_ready = espintcp_sk_data_ready;
	sk->sk_write_space = espintcp_write_space;
	WRITE_ONCE(sk->sk_prot, &espintcp_prot[fam]);
	WRITE_ONCE(sk->sk_socket->ops, ops);
	write_unlock_bh(&sk->sk_callback_lock);

	/* A responder attaches after reading the IKETCP prefix; the first
	 * message may already be queued. Parse it now rather than on the next
	 * segment (the work runs once setsockopt() releases the socket).
	 */
	strp_check_rcv(&ctx->strp);
	return 0;
}

/* Everything that needs process context happens here, before TCP's close:
 * afterwards the socket may live on, orphaned, until a timer or softirq
 * destroys it and calls espintcp_release().
 */
static void espintcp_close(struct sock *sk, long timeout)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);
	struct proto *prot = ctx->saved_prot;

	lock_sock(sk);
	/* After this nothing queues ESP or arms the tx work. */
	spin_lock_bh(&ctx->esp_txq.lock);
	set_bit(ESPINTCP_CLOSING, &ctx->flags);
	spin_unlock_bh(&ctx->esp_txq.lock);

	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_data_ready = ctx->saved_data_ready;
	sk->sk_write_space = ctx->saved_write_space;
	WRITE_ONCE(sk->sk_prot, prot);
	if (sk->sk_socket)
		WRITE_ONCE(sk->sk_socket->ops, ctx->saved_ops);
	write_unlock_bh(&sk->sk_callback_lock);
	release_sock(sk);

	espintcp_rx_stop(ctx);
	espintcp_tx_stop(ctx);

	prot->close(sk, timeout);
}

/* Socket destruction; any context. */
static void espintcp_release(struct sock *sk)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);

	if (!ctx)
		return;
	/* Only a socket that was never closed through us gets here armed. */
	WARN_ON_ONCE(!espintcp_closing(ctx));
	rcu_assign_pointer(inet_csk(sk)->icsk_ulp_data, NULL);
	espintcp_ctx_put(ctx);
}

static int espintcp_disconnect(struct sock *sk, int flags)
{
	/* The stream's framing cannot survive a reconnect. */
	return -EOPNOTSUPP;
}

/* TCP repair mode would let userspace rewrite the send and receive queues
 * and sequence numbers under the parser and the transmit slot, and makes
 * TCP refuse what we send: none of it can work on a framed stream.
 */
static int espintcp_setsockopt(struct sock *sk, int level, int optname,
			       sockptr_t optval, unsigned int optlen)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);

	if (level == SOL_TCP && optname == TCP_REPAIR)
		return -EOPNOTSUPP;
	return ctx->saved_prot->setsockopt(sk, level, optname, optval, optlen);
}

static int espintcp_put_counters(struct sk_buff *skb,
				 const struct espintcp_ctx *ctx)
{
	const struct {
		int attr;
		u64 val;
	} info[] = {
		{ ESPINTCP_INFO_IKE_RX, READ_ONCE(ctx->stats.ike_rx) },
		{ ESPINTCP_INFO_IKE_TX, READ_ONCE(ctx->stats.ike_tx) },
		{ ESPINTCP_INFO_ESP_RX, READ_ONCE(ctx->stats.esp_rx) },
		{ ESPINTCP_INFO_ESP_TX, READ_ONCE(ctx->stats.esp_tx) },
		{ ESPINTCP_INFO_KEEPALIVE_RX, READ_ONCE(ctx->stats.keepalive_rx) },
		{ ESPINTCP_INFO_IKE_RX_DROPS, READ_ONCE(ctx->stats.ike_rx_drops) },
		{ ESPINTCP_INFO_ESP_RX_DROPS, READ_ONCE(ctx->stats.esp_rx_drops) },
		{ ESPINTCP_INFO_BAD_RX, READ_ONCE(ctx->stats.bad_rx) },
		{ ESPINTCP_INFO_ESP_TX_DROPS, READ_ONCE(ctx->stats.esp_tx_drops) },
		{ ESPINTCP_INFO_IKE_RXQ, skb_queue_len_lockless(&ctx->ike_rxq) },
		{ ESPINTCP_INFO_ESP_TXQ, skb_queue_len_lockless(&ctx->esp_txq) },
		{ ESPINTCP_INFO_TX_WORK, READ_ONCE(ctx->stats.tx_work) },
		{ ESPINTCP_INFO_ESP_TX_CONGESTION,
		  READ_ONCE(ctx->stats.esp_tx_congestion) },
		{ ESPINTCP_INFO_ESP_TXQ_BYTES, READ_ONCE(ctx->esp_txq_bytes) },
		{ ESPINTCP_INFO_RX_UNSTALL, READ_ONCE(ctx->stats.rx_unstall) },
	};
	struct nlattr *nest;
	int i;

	BUILD_BUG_ON(ARRAY_SIZE(info) != ESPINTCP_INFO_MAX - ESPINTCP_INFO_PAD);
	nest = nla_nest_start_noflag(skb, INET_ULP_INFO_ESPINTCP);
	if (!nest)
		return -EMSGSIZE;
	for (i = 0; i < ARRAY_SIZE(info); i++) {
		if (nla_put_u64_64bit(skb, info[i].attr, info[i].val,
				      ESPINTCP_INFO_PAD)) {
			nla_nest_cancel(skb, nest);
			return -EMSGSIZE;
		}
	}
	nla_nest_end(skb, nest);
	return 0;
}

/* inet_diag, under RCU. */
static int espintcp_get_info(struct sock *sk, struct sk_buff *skb)
{
	const struct espintcp_ctx *ctx;
	int err = 0;

	rcu_read_lock();
	ctx = rcu_dereference(inet_csk(sk)->icsk_ulp_data);
	if (ctx)
		err = espintcp_put_counters(skb, ctx);
	rcu_read_unlock();
	return err;
}

static size_t espintcp_get_info_size(const struct sock *sk)
{
	return nla_total_size(0) +
	       (ESPINTCP_INFO_MAX - ESPINTCP_INFO_PAD) *
	       nla_total_size_64bit(sizeof(u64));
}

static struct tcp_ulp_ops espintcp_ulp __read_mostly = {
	.name		= "espintcp",
	.owner		= THIS_MODULE,
	.init		= espintcp_init,
	.release	= espintcp_release,
	.get_info	= espintcp_get_info,
	.get_info_size	= espintcp_get_info_size,
};

static void espintcp_build_prot(struct proto *prot, const struct proto *base)
{
	*prot = *base;
	prot->close = espintcp_close;
	prot->disconnect = espintcp_disconnect;
	prot->setsockopt = espintcp_setsockopt;
	prot->sendmsg = espintcp_sendmsg;
	prot->recvmsg = espintcp_recvmsg;
	prot->release_cb = espintcp_release_cb;
	espintcp_refuse_sendpage(prot);
	prot->psock_update_sk_prot = NULL;
}

static int __init espintcp_module_init(void)
{
	int err;

	espintcp_build_prot(&espintcp_prot[ESPINTCP_V4], &tcp_prot);
	espintcp_build_ops(&espintcp_ops[ESPINTCP_V4], &inet_stream_ops);
#if IS_ENABLED(CONFIG_IPV6)
	espintcp_build_prot(&espintcp_prot[ESPINTCP_V6], &tcpv6_prot);
#endif
	err = esp_tcp_init();
	if (err)
		return err;
	/* A kernel built with CONFIG_INET_ESPINTCP has its own "espintcp":
	 * that one stays, and so must its ESP types.
	 */
	err = tcp_register_ulp(&espintcp_ulp);
	if (err) {
		pr_err("the kernel already has a TCP ULP \"espintcp\" (CONFIG_INET_ESPINTCP?), not loading: %d\n",
		       err);
		esp_tcp_exit();
	}
	return err;
}

static void __exit espintcp_module_exit(void)
{
	tcp_unregister_ulp(&espintcp_ulp);
	esp_tcp_exit();
	/* Contexts are freed after a grace period. */
	rcu_barrier();
}

module_init(espintcp_module_init);
module_exit(espintcp_module_exit);

MODULE_DESCRIPTION("RFC 9329 TCP encapsulation of IKE and ESP (TCP ULP)");
MODULE_LICENSE("GPL");
#ifdef ESPINTCP_VERSION
MODULE_VERSION(ESPINTCP_VERSION);
#endif
MODULE_ALIAS_TCP_ULP("espintcp");
