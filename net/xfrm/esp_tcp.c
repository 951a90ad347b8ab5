// SPDX-License-Identifier: GPL-2.0
/*
 * ESP over TCP (RFC 9329): send an SA's packets through the espintcp socket
 * whose connection has the SA's addresses and encapsulation ports.
 *
 * Each TCP-encapsulated SA caches the socket's espintcp context. The cache is
 * checked, not trusted: a context whose socket has been closed is dropped and
 * looked up again, and so is one found for ports the SA no longer has (the
 * key manager moved the SA to a new connection). A context reference pins
 * neither the socket nor its network namespace, so an SA outliving its
 * connection, or a namespace being deleted, leaks nothing.
 *
 * The cache hangs off the SA's encapsulation template, which init_state()
 * re-allocates with room for a pointer to it; the core copies and frees
 * x->encap as a plain struct xfrm_encap_tmpl, which stays at offset 0. The
 * core frees x->encap before calling the type's destructor, so the caches are
 * also kept in a table keyed by SA (resizable: constant time however many
 * SAs), used only at set-up and destruction.
 */

#include <linux/rhashtable.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <net/espintcp.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/xfrm.h>

#include "esp_core.h"

struct esp_tcp_cache {
	struct rhash_head node;		/* in esp_tcp_caches */
	struct rcu_head rcu;		/* lookups walk the table under RCU */
	const struct xfrm_state *x;	/* the key */
	spinlock_t lock;		/* protects the fields below */
	struct espintcp_ctx *ctx;	/* referenced, or NULL */
	__be16 sport;			/* the SA's ports ctx was found for */
	__be16 dport;
};

struct esp_tcp_encap {
	struct xfrm_encap_tmpl tmpl;	/* x->encap points here */
	struct esp_tcp_cache *cache;
};

static const struct rhashtable_params esp_tcp_params = {
	.head_offset		= offsetof(struct esp_tcp_cache, node),
	.key_offset		= offsetof(struct esp_tcp_cache, x),
	.key_len		= sizeof(const struct xfrm_state *),
	.automatic_shrinking	= true,
};

static struct rhashtable esp_tcp_caches;

int esp_tcp_init(void)
{
	return rhashtable_init(&esp_tcp_caches, &esp_tcp_params);
}

/* Every SA of ours is gone: esp4 and esp6 hold this module. */
void esp_tcp_exit(void)
{
	rhashtable_destroy(&esp_tcp_caches);
}

int esp_tcp_init_state(struct xfrm_state *x)
{
	struct esp_tcp_encap *e;
	struct esp_tcp_cache *c;
	int err;

	e = kzalloc(sizeof(*e), GFP_KERNEL);
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!e || !c) {
		kfree(e);
		kfree(c);
		return -ENOMEM;
	}
	spin_lock_init(&c->lock);
	c->x = x;
	err = rhashtable_insert_fast(&esp_tcp_caches, &c->node, esp_tcp_params);
	if (err) {
		kfree(e);
		kfree(c);
		return err;
	}
	e->tmpl = *x->encap;
	e->cache = c;

	/* x is not visible to anyone else yet. */
	kfree(x->encap);
	x->encap = &e->tmpl;
	return 0;
}

void esp_tcp_destroy_state(struct xfrm_state *x)
{
	struct esp_tcp_cache *c;

	c = rhashtable_lookup_fast(&esp_tcp_caches, &x, esp_tcp_params);
	if (!c)
		return;
	rhashtable_remove_fast(&esp_tcp_caches, &c->node, esp_tcp_params);
	if (c->ctx)
		espintcp_ctx_put(c->ctx);
	/* Another SA's lookup or insert may be walking this bucket's chain,
	 * under RCU and without a lock: free after a grace period.
	 */
	kfree_rcu(c, rcu);
}

/* The socket's ESP queue was full: a congestion drop, not a failure of the
 * SA. It is counted where drops for lack of buffer space are counted for any
 * outgoing IP datagram (RFC 4293 ipSystemStatsOutDiscards: Ip OutDiscards in
 * /proc/net/snmp, Ip6OutDiscards in /proc/net/snmp6) in the outer family, and
 * per socket by the ULP (esp_tx_congestion); XfrmOutError stays for packets
 * that had no usable socket.
 */
static void esp_tcp_congestion(struct xfrm_state *x)
{
	struct net *net = xs_net(x);

#if IS_ENABLED(CONFIG_IPV6)
	if (x->props.family == AF_INET6) {
		IP6_INC_STATS(net, NULL, IPSTATS_MIB_OUTDISCARDS);
		return;
	}
#endif
	IP_INC_STATS(net, IPSTATS_MIB_OUTDISCARDS);
}

/* Consumes @skb, which holds the encrypted packet with skb->data at the outer
 * network header. A full ESP queue counts as congestion (see above), other
 * failures as XfrmOutError.
 */
void esp_tcp_output(struct xfrm_state *x, struct sk_buff *skb)
{
	struct esp_tcp_cache *c;
	struct espintcp_ctx *ctx;
	__be16 sport, dport;
	int err = -ENOTCONN;
	__be16 *len;

	/* The frame: Length, then the ESP packet; no IP header. */
	__skb_pull(skb, skb_transport_offset(skb));
	if (skb->len > ESPINTCP_MAX_PAYLOAD) {
		err = -EMSGSIZE;
		goto drop;
	}
	len = skb_push(skb, ESPINTCP_LEN_SIZE);
	*len = htons(skb->len);

	spin_lock_bh(&x->lock);
	c = container_of(x->encap, struct esp_tcp_encap, tmpl)->cache;
	sport = x->encap->encap_sport;
	dport = x->encap->encap_dport;
	spin_unlock_bh(&x->lock);

	spin_lock_bh(&c->lock);
	ctx = c->ctx;
	if (ctx && (!espintcp_ctx_alive(ctx) || c->sport != sport ||
		    c->dport != dport)) {
		espintcp_ctx_put(ctx);
		ctx = NULL;
	}
	if (!ctx) {
		ctx = espintcp_ctx_lookup(xs_net(x), x);
		c->sport = sport;
		c->dport = dport;
	}
	c->ctx = ctx;
	if (ctx)
		err = espintcp_xmit(ctx, skb);
	spin_unlock_bh(&c->lock);
	if (!ctx)
		goto drop;
	if (err == -ENOBUFS)
		esp_tcp_congestion(x);
	else if (err)
		XFRM_INC_STATS(xs_net(x), LINUX_MIB_XFRMOUTERROR);
	return;

drop:
	XFRM_INC_STATS(xs_net(x), LINUX_MIB_XFRMOUTERROR);
	kfree_skb(skb);
}
