// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp transmit path. IKE messages come from sendmsg(), ESP packets from
 * XFRM through espintcp_xmit(); both are written to TCP through one slot, so
 * that the bytes of two messages never interleave on the wire. When both
 * kinds wait, the slot alternates between them: neither can starve the
 * other.
 */

#include <linux/sched/signal.h>
#include <linux/uio.h>
#include <net/espintcp_compat.h>
#include <net/tcp.h>
#include <net/xfrm.h>

#include "espintcp.h"

/* Any context: run the tx work now unless close() has begun. Queue lock
 * held.
 */
void espintcp_tx_kick(struct espintcp_ctx *ctx)
{
	lockdep_assert_held(&ctx->esp_txq.lock);
	if (!espintcp_closing(ctx))
		mod_delayed_work(system_wq, &ctx->tx_work, 0);
}

/* As espintcp_tx_kick(), but later, unless it is armed already. */
void espintcp_tx_retry(struct espintcp_ctx *ctx)
{
	lockdep_assert_held(&ctx->esp_txq.lock);
	if (!espintcp_closing(ctx))
		queue_delayed_work(system_wq, &ctx->tx_work, ESPINTCP_TX_RETRY);
}

static void espintcp_wake_writers(struct sock *sk)
{
	struct socket_wq *wq;

	rcu_read_lock();
	wq = rcu_dereference(sk->sk_wq);
	if (skwq_has_sleeper(wq))
		wake_up_interruptible_poll(&wq->wait, EPOLLOUT | EPOLLWRNORM |
					   EPOLLWRBAND);
	rcu_read_unlock();
}

/* Zero-copy where TCP may take a page reference, a copy otherwise. */
static int espintcp_send_frag(struct sock *sk, const skb_frag_t *frag,
			      unsigned int off, int flags, bool more)
{
	struct page *page = skb_frag_page(frag);
	unsigned int len = skb_frag_size(frag) - off;
	struct msghdr msg = { .msg_flags = flags };
	struct bio_vec bv = {
		.bv_page = page,
		.bv_offset = skb_frag_off(frag) + off,
		.bv_len = len,
	};

	if (sendpage_ok(page))
		return espintcp_tcp_send_page(sk, page, bv.bv_offset, len,
					      flags, more);

	if (more)
		msg.msg_flags |= MSG_MORE;
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, &bv, 1, len);
	return tcp_sendmsg_locked(sk, &msg, len);
}

/* Write what is left of the slot's message. Socket lock owned. Returns 0 once
 * the whole message is in TCP, -EAGAIN when TCP is full, another -errno when
 * the connection cannot take data any more.
 */
static int espintcp_send_slot(struct sock *sk, struct espintcp_slot *slot)
{
	struct sk_buff *skb = slot->skb;
	struct espintcp_ctx *ctx = espintcp_ctx(sk);
	const int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
	int ret = 0;

	/* TCP would report a pending error by consuming it (sock_error()):
	 * it belongs to the user's next call, not to us.
	 */
	if (READ_ONCE(sk->sk_err))
		return -EPIPE;

	/* See espintcp_write_space(). */
	WRITE_ONCE(ctx->tx_in_tcp, true);
	while (slot->offset < skb->len) {
		unsigned int off = slot->offset;

		if (off < skb_headlen(skb)) {
			struct kvec kv = {
				.iov_base = skb->data + off,
				.iov_len = skb_headlen(skb) - off,
			};
			struct msghdr msg = { .msg_flags = flags };

			if (skb_headlen(skb) < skb->len)
				msg.msg_flags |= MSG_MORE;
			iov_iter_kvec(&msg.msg_iter, ITER_SOURCE, &kv, 1,
				      kv.iov_len);
			ret = tcp_sendmsg_locked(sk, &msg, kv.iov_len);
		} else {
			const skb_frag_t *frag;
			int i;

			off -= skb_headlen(skb);
			for (i = 0; off >= skb_frag_size(&skb_shinfo(skb)->frags[i]); i++)
				off -= skb_frag_size(&skb_shinfo(skb)->frags[i]);
			frag = &skb_shinfo(skb)->frags[i];
			ret = espintcp_send_frag(sk, frag, off, flags,
						 i + 1 < skb_shinfo(skb)->nr_frags);
		}
		if (ret <= 0) {
			ret = ret ? ret : -EAGAIN;
			break;
		}
		slot->offset += ret;
		ret = 0;
	}
	WRITE_ONCE(ctx->tx_in_tcp, false);
	return ret;
}

static void espintcp_slot_done(struct espintcp_ctx *ctx)
{
	struct espintcp_slot *slot = &ctx->tx;

	if (slot->ike)
		ESPINTCP_INC(ctx, ike_tx);
	else
		ESPINTCP_INC(ctx, esp_tx);
	ctx->tx_last_ike = slot->ike;
	/* An ESP packet charged to a local sender releases the charge now
	 * and wakes the sender through its destructor (espintcp_xmit()).
	 */
	consume_skb(slot->skb);
	WRITE_ONCE(slot->skb, NULL);
	espintcp_wake_writers(ctx->sk);
}

/* The next queued ESP packet, if any. */
static struct sk_buff *espintcp_esp_dequeue(struct espintcp_ctx *ctx)
{
	struct sk_buff *skb;

	spin_lock_bh(&ctx->esp_txq.lock);
	skb = __skb_dequeue(&ctx->esp_txq);
	if (skb)
		WRITE_ONCE(ctx->esp_txq_bytes,
			   ctx->esp_txq_bytes - skb->truesize);
	spin_unlock_bh(&ctx->esp_txq.lock);
	return skb;
}

/* Someone sleeps in lock_sock(). */
static bool espintcp_lock_contended(struct sock *sk)
{
	/* Waiters join under the socket's spinlock: exact there, and where
	 * we own the lock a racy read, good enough to stop at the next
	 * message boundary. No barrier: nobody sleeps on what this says.
	 */
	return waitqueue_active(&sk->sk_lock.wq);
}

/* Move messages into TCP until it is full or nothing waits. Socket lock
 * owned. An IKE sender waiting for the slot gets it after each ESP message;
 * an ESP packet gets it after each IKE message. With @yield (the tx work),
 * anyone waiting for the socket lock gets it after the current message, and
 * what arrived for the socket meanwhile is processed every
 * ESPINTCP_TX_FLUSH_BYTES or ESPINTCP_TX_FLUSH_TIME, as tcp_sendmsg_locked()
 * does every 16 skbs: ACKs make room, and a reset ends the run, where they
 * would otherwise wait in the backlog until TCP's send buffer is full. The
 * time bound is for a slow run, where a reset would wait for the bytes. Not
 * more often: at every message this cut the rate of small ESP packets
 * several times over, every 16 segments a fifth of bulk throughput (make
 * bench).
 */
static int espintcp_push(struct espintcp_ctx *ctx, bool yield)
{
	struct espintcp_slot *slot = &ctx->tx;
	struct sock *sk = ctx->sk;
	struct tcp_sock *tp = tcp_sk(sk);
	unsigned long flush_at = jiffies + ESPINTCP_TX_FLUSH_TIME;
	u32 flushed = tp->write_seq;
	int err;

	for (;;) {
		if (!slot->skb) {
			struct sk_buff *skb;

			if (atomic_read(&ctx->ike_waiters) && !ctx->tx_last_ike)
				return 0;
			/* On 6.12 (not 6.1) this also runs our
			 * release_cb with the lock still ours: it may set
			 * TX_HANDOFF (the check below then returns) or kick the
			 * work, which finds the lock free after our release.
			 */
			if (yield &&
			    (tp->write_seq - flushed >= ESPINTCP_TX_FLUSH_BYTES ||
			     time_after_eq(jiffies, flush_at))) {
				sk_flush_backlog(sk);
				flushed = tp->write_seq;
				flush_at = jiffies + ESPINTCP_TX_FLUSH_TIME;
			}
			if (yield && espintcp_lock_contended(sk)) {
				/* Our release_sock() lets the waiter in
				 * first; its own runs us again.
				 */
				set_bit(ESPINTCP_TX_DEFERRED, &ctx->flags);
				return 0;
			}
			skb = espintcp_esp_dequeue(ctx);
			if (!skb)
				return 0;
			slot->offset = 0;
			slot->ike = false;
			WRITE_ONCE(slot->skb, skb);
		}
		err = espintcp_send_slot(sk, slot);
		if (err)
			return err;
		espintcp_slot_done(ctx);
	}
}

/* The connection is gone: no message can complete any more. */
static void espintcp_tx_purge(struct espintcp_ctx *ctx)
{
	struct espintcp_slot *slot = &ctx->tx;
	struct net *net = sock_net(ctx->sk);
	struct sk_buff_head dead;
	struct sk_buff *skb;

	skb = slot->skb;
	WRITE_ONCE(slot->skb, NULL);
	if (skb && slot->ike) {
		kfree_skb(skb);
	} else if (skb) {
		spin_lock_bh(&ctx->esp_txq.lock);
		WRITE_ONCE(ctx->esp_txq_bytes,
			   ctx->esp_txq_bytes + skb->truesize);
		__skb_queue_head(&ctx->esp_txq, skb);
		spin_unlock_bh(&ctx->esp_txq.lock);
	}

	/* What is queued now, taken at once: XFRM may go on queueing while
	 * we free (the connection is gone, but close() has not begun), and
	 * a loop that dequeued until the queue was empty could run for as
	 * long as ESP kept coming, with the socket lock held.
	 */
	__skb_queue_head_init(&dead);
	spin_lock_bh(&ctx->esp_txq.lock);
	skb_queue_splice_init(&ctx->esp_txq, &dead);
	WRITE_ONCE(ctx->esp_txq_bytes, 0);
	WRITE_ONCE(ctx->stats.esp_tx_drops,
		   ctx->stats.esp_tx_drops + skb_queue_len(&dead));
	spin_unlock_bh(&ctx->esp_txq.lock);

	/* Process context: the destructors of ESP still charged to local
	 * sockets (see espintcp_xmit()) run here, as they would when a
	 * device queue is flushed.
	 */
	while ((skb = __skb_dequeue(&dead))) {
		kfree_skb(skb);
		XFRM_INC_STATS(net, LINUX_MIB_XFRMOUTERROR);
	}
	espintcp_wake_writers(ctx->sk);
}

/* Sharing the socket lock.
 *
 * lock_sock() is not fair: release_sock() wakes a waiter, but whoever calls
 * lock_sock() before that waiter runs takes the lock and the waiter sleeps
 * again. The tx work is always that one while ESP flows: the ACKs that its
 * own release_sock() processes call write_space, which runs it again at
 * once, and a peer that keeps reading keeps it busy for as long as ESP
 * comes. close(), setsockopt(), the strparser's work would wait as long.
 *
 * So the tx work takes turns. It gives up the lock at the next message
 * boundary when someone waits for it (espintcp_push()), never waits behind
 * an owner and never overtakes a waiter that a release woke
 * (espintcp_tx_may_lock()): it leaves ESPINTCP_TX_DEFERRED instead, and the
 * first release_sock() with nobody waiting runs it (espintcp_release_cb()).
 * A woken waiter always takes the lock and releases it in turn, so a
 * deferred run is never lost; ESPINTCP_CLOSING still stops it for good.
 * A lock user waits for one message at most; while someone waits at every
 * release, ESP waits instead (its queue's limit bounds it), except what an
 * IKE sender moves itself.
 */

/* Whether the tx work may take the socket lock now; if not, the next
 * release_sock() with nobody waiting runs it again.
 */
static bool espintcp_tx_may_lock(struct espintcp_ctx *ctx)
{
	struct sock *sk = ctx->sk;
	bool ok;

	spin_lock_bh(&sk->sk_lock.slock);
	ok = !sock_owned_by_user_nocheck(sk) &&
	     !test_bit(ESPINTCP_TX_HANDOFF, &ctx->flags);
	if (!ok)
		set_bit(ESPINTCP_TX_DEFERRED, &ctx->flags);
	spin_unlock_bh(&sk->sk_lock.slock);
	return ok;
}

/* The proto's release_cb: every release_sock() calls it, socket spinlock
 * held, before the lock is given up and a waiter is woken.
 */
void espintcp_release_cb(struct sock *sk)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);

	ctx->saved_prot->release_cb(sk);

	if (espintcp_lock_contended(sk)) {
		/* The waiter woken now goes first. */
		if (!test_bit(ESPINTCP_TX_HANDOFF, &ctx->flags))
			set_bit(ESPINTCP_TX_HANDOFF, &ctx->flags);
		return;
	}
	if (test_bit(ESPINTCP_TX_HANDOFF, &ctx->flags))
		clear_bit(ESPINTCP_TX_HANDOFF, &ctx->flags);
	if (test_bit(ESPINTCP_TX_DEFERRED, &ctx->flags)) {
		clear_bit(ESPINTCP_TX_DEFERRED, &ctx->flags);
		spin_lock_bh(&ctx->esp_txq.lock);
		espintcp_tx_kick(ctx);
		spin_unlock_bh(&ctx->esp_txq.lock);
	}
}

static void espintcp_tx_work(struct work_struct *work)
{
	struct espintcp_ctx *ctx = container_of(to_delayed_work(work),
						struct espintcp_ctx, tx_work);
	struct sock *sk = ctx->sk;
	int err;

	/* The work never runs twice at once: a plain increment is enough. */
	ESPINTCP_INC(ctx, tx_work);
	if (test_and_clear_bit(ESPINTCP_ABORT, &ctx->flags)) {
		/* A framing error: RFC 9329 section 3 says close. */
		tcp_abort(sk, READ_ONCE(ctx->rx_err) ? : EPROTO);
	}

	if (!espintcp_tx_may_lock(ctx))
		return;
	lock_sock(sk);
	err = espintcp_push(ctx, true);
	if (err && err != -EAGAIN)
		espintcp_tx_purge(ctx);
	release_sock(sk);
}

void espintcp_tx_init(struct espintcp_ctx *ctx)
{
	skb_queue_head_init(&ctx->esp_txq);
	ctx->esp_txq_budget = ESPINTCP_ESP_TXQ_MIN;
	INIT_DELAYED_WORK(&ctx->tx_work, espintcp_tx_work);
}

/* close(): ESPINTCP_CLOSING is set, nothing can arm the work again. */
void espintcp_tx_stop(struct espintcp_ctx *ctx)
{
	struct sock *sk = ctx->sk;

	cancel_delayed_work_sync(&ctx->tx_work);

	/* Give TCP the partial message, if any, so that the peer does not see
	 * a truncated frame before the FIN; what remains queued is dropped.
	 */
	lock_sock(sk);
	if (ctx->tx.skb && !espintcp_send_slot(sk, &ctx->tx))
		espintcp_slot_done(ctx);
	espintcp_tx_purge(ctx);
	release_sock(sk);
}

/* TCP calls this when space frees up; and from within our own send when it
 * refused memory (global TCP memory pressure) with nothing of ours in
 * flight, for edge-triggered pollers: then no ACK will ever call it again,
 * and the tx work must try again later, not at once in a loop. Nobody
 * else calls it while we own the socket: tx_in_tcp set means our send.
 * Called by the lock's owner (its backlog, its setsockopt()), it leaves the
 * run to that owner's release_sock() rather than start a work that could
 * only wait for it.
 */
void espintcp_write_space(struct sock *sk)
{
	struct espintcp_ctx *ctx;

	rcu_read_lock();
	ctx = rcu_dereference(inet_csk(sk)->icsk_ulp_data);
	if (ctx && (READ_ONCE(ctx->tx.skb) ||
		    !skb_queue_empty_lockless(&ctx->esp_txq))) {
		spin_lock_bh(&ctx->esp_txq.lock);
		if (READ_ONCE(ctx->tx_in_tcp))
			espintcp_tx_retry(ctx);
		else if (sock_owned_by_user_nocheck(sk))
			set_bit(ESPINTCP_TX_DEFERRED, &ctx->flags);
		else
			espintcp_tx_kick(ctx);
		spin_unlock_bh(&ctx->esp_txq.lock);
	}
	if (ctx)
		ctx->saved_write_space(sk);
	rcu_read_unlock();
}

/* Whether @skb may stay charged to its sender while it waits for the stream.
 *
 * A local sender is throttled by the memory it is charged for: TCP small
 * queues by sk_wmem_alloc, UDP, raw and ping sockets by SO_SNDBUF, and both
 * are woken by the skb's destructor (tcp_wfree(), sock_wfree()) when it is
 * freed. Orphaning the skb here would release that memory at once and let
 * the sender fill the ESP queue until it overflows. So, once the queue is
 * behind (espintcp_keep_charge()), the skb keeps its owner until it is
 * written to the stream (espintcp_slot_done()) or dropped
 * (espintcp_tx_purge()), exactly as a packet in a device queue does; the
 * sender's wakeup then comes from the destructor.
 *
 * That is safe because:
 *  - a full socket cannot be freed while an skb holds its sk_wmem_alloc or
 *    a reference (sk_free() leaves the last free to the destructor), so the
 *    queue never points at a freed socket, whatever happens to the sender
 *    or its namespace meanwhile;
 *  - every skb leaves the queue through consume_skb() or kfree_skb() in the
 *    tx work, close() or sendmsg(), in process context; tcp_wfree() and
 *    sock_wfree() are written for any context (XFRM error paths and
 *    skb_orphan() in process-context output already run them there);
 *    none is run under the ESP queue's lock, and no sender's write_space
 *    callback takes the espintcp socket's lock;
 *  - nothing between here and the free re-owns the skb: the stream takes a
 *    copy of the bytes (or page references), never the skb, and this is
 *    the only skb_orphan() on the path;
 *  - skb->truesize does not change while queued (and pskb_expand_head()
 *    keeps it for owned skbs), so the destructor releases what was
 *    charged.
 *
 * Not kept: skbs without a socket (forwarded traffic), and those of a
 * request or timewait socket (SYN-ACK, RST, ACK sent on behalf of a socket
 * that is not a full one: sock_edemux() holds a reference to a small
 * structure without send accounting). Those are orphaned, which drops that
 * reference now; they count against the smaller forwarding budget.
 */
static bool espintcp_keep_owner(const struct sk_buff *skb)
{
	return skb->sk && skb->destructor && sk_fullsock(skb->sk);
}

/* Whether a local sender's skb should keep its charge, given the queue.
 *
 * Below the forwarding budget the queue is only the few packets that wait
 * for the tx work, as in a device's queue: charging the sender for that
 * time would let its small-queue limit (two packets, or a millisecond's
 * worth) meter it to the tx work's wakeups, and ESP-in-TCP would run at a
 * fraction of ESP-in-UDP's throughput. So such an skb is released from its
 * sender as a forwarded one is, and only the ones queued behind a backlog
 * (the stream is slower than the senders) keep their charge and push back.
 * Read without the queue's lock: a race admits a few more uncharged skbs,
 * and those still count against the local limit.
 */
static bool espintcp_keep_charge(const struct espintcp_ctx *ctx)
{
	return READ_ONCE(ctx->esp_txq_bytes) >= READ_ONCE(ctx->esp_txq_budget);
}

int espintcp_xmit(struct espintcp_ctx *ctx, struct sk_buff *skb)
{
	unsigned long limit;	/* sk_sndbuf may be up to INT_MAX */
	bool local;
	__be16 blen;
	__be32 spi;
	int err;

	if (skb->len < ESPINTCP_LEN_SIZE + sizeof(spi) ||
	    skb->len > ESPINTCP_MAX_MSG ||
	    skb_copy_bits(skb, 0, &blen, sizeof(blen)) ||
	    be16_to_cpu(blen) != skb->len ||
	    skb_copy_bits(skb, ESPINTCP_LEN_SIZE, &spi, sizeof(spi)) ||
	    !spi) {
		err = -EINVAL;
		goto drop;
	}
	/* espintcp_send_slot() walks the head and page frags only. */
	if (skb_has_frag_list(skb) && __skb_linearize(skb)) {
		err = -ENOMEM;
		goto drop;
	}
	skb_dst_drop(skb);
	local = espintcp_keep_owner(skb);
	if (!local || !espintcp_keep_charge(ctx))
		skb_orphan(skb);

	spin_lock_bh(&ctx->esp_txq.lock);
	if (espintcp_closing(ctx)) {
		err = -ENOTCONN;
		goto unlock;
	}
	/* Not closing: ctx->sk is alive while we hold the lock. A limit that
	 * is not yet reached admits one more packet of any size, so a
	 * message always fits into an empty queue.
	 */
	limit = max(READ_ONCE(ctx->sk->sk_sndbuf), ESPINTCP_ESP_TXQ_MIN);
	WRITE_ONCE(ctx->esp_txq_budget, limit);
	if (local)
		limit *= ESPINTCP_ESP_TXQ_LOCAL;
	if (ctx->esp_txq_bytes >= limit) {
		err = -ENOBUFS;
		ESPINTCP_INC(ctx, esp_tx_congestion);
		goto unlock;
	}
	WRITE_ONCE(ctx->esp_txq_bytes, ctx->esp_txq_bytes + skb->truesize);
	__skb_queue_tail(&ctx->esp_txq, skb);
	espintcp_tx_kick(ctx);
	spin_unlock_bh(&ctx->esp_txq.lock);
	return 0;

unlock:
	ESPINTCP_INC(ctx, esp_tx_drops);
	spin_unlock_bh(&ctx->esp_txq.lock);
	kfree_skb(skb);
	return err;

drop:
	kfree_skb(skb);
	spin_lock_bh(&ctx->esp_txq.lock);
	ESPINTCP_INC(ctx, esp_tx_drops);
	spin_unlock_bh(&ctx->esp_txq.lock);
	return err;
}
EXPORT_SYMBOL_GPL(espintcp_xmit);

/* Wait until the slot is ours to fill. Socket lock owned. */
static int espintcp_wait_slot(struct espintcp_ctx *ctx, long *timeo)
{
	DEFINE_WAIT_FUNC(wait, woken_wake_function);
	struct sock *sk = ctx->sk;
	int err = 0;

	for (;;) {
		if (sk->sk_err) {
			err = sock_error(sk) ? : -EPIPE;
			break;
		}
		if (sk->sk_shutdown & SEND_SHUTDOWN) {
			err = -EPIPE;
			break;
		}
		err = espintcp_push(ctx, false);
		if (err && err != -EAGAIN)
			break;
		err = 0;
		if (!ctx->tx.skb)
			break;
		if (!*timeo) {
			err = -EAGAIN;
			break;
		}
		if (signal_pending(current)) {
			err = sock_intr_errno(*timeo);
			break;
		}
		add_wait_queue(sk_sleep(sk), &wait);
		sk_wait_event(sk, timeo, !READ_ONCE(ctx->tx.skb) ||
			      READ_ONCE(sk->sk_err) ||
			      (READ_ONCE(sk->sk_shutdown) & SEND_SHUTDOWN),
			      &wait);
		remove_wait_queue(sk_sleep(sk), &wait);
	}
	return err;
}

int espintcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)
{
	struct espintcp_ctx *ctx = espintcp_ctx(sk);
	struct sk_buff *skb;
	__be32 marker;
	long timeo;
	int err;

	if (msg->msg_flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_EOR |
			       MSG_CMSG_COMPAT))
		return -EOPNOTSUPP;
	if (msg->msg_controllen)
		return -EOPNOTSUPP;
	if (size > ESPINTCP_MAX_PAYLOAD)
		return -EMSGSIZE;
	/* Userspace sends IKE only: marker included, as recvmsg returns it. */
	if (size < ESPINTCP_NON_ESP_MARKER)
		return -EINVAL;

	skb = alloc_skb(ESPINTCP_LEN_SIZE + size, sk->sk_allocation);
	if (!skb)
		return -ENOBUFS;
	*(__be16 *)skb_put(skb, ESPINTCP_LEN_SIZE) =
		cpu_to_be16(ESPINTCP_LEN_SIZE + size);
	if (!copy_from_iter_full(skb_put(skb, size), size, &msg->msg_iter)) {
		err = -EFAULT;
		goto free;
	}
	if (skb_copy_bits(skb, ESPINTCP_LEN_SIZE, &marker, sizeof(marker)) ||
	    marker) {
		err = -EINVAL;
		goto free;
	}

	/* Announce ourselves before taking the socket lock: the tx work may
	 * hold it for as long as the peer keeps reading ESP, and must hand
	 * the slot over at the next message boundary.
	 */
	atomic_inc(&ctx->ike_waiters);
	lock_sock(sk);
	timeo = sock_sndtimeo(sk, msg->msg_flags & MSG_DONTWAIT);
	err = espintcp_wait_slot(ctx, &timeo);
	atomic_dec(&ctx->ike_waiters);
	if (err)
		goto unlock;

	ctx->tx.offset = 0;
	ctx->tx.ike = true;
	WRITE_ONCE(ctx->tx.skb, skb);
	err = espintcp_push(ctx, false);
	if (err && err != -EAGAIN) {
		/* The connection failed: under our message (report it, and
		 * keep it out of the purge if none of it reached TCP), or
		 * under a later ESP packet once ours was written whole. We
		 * hold the lock: an IKE message in the slot can only be ours.
		 */
		if (!ctx->tx.skb || !ctx->tx.ike) {
			err = size;
		} else if (!ctx->tx.offset) {
			WRITE_ONCE(ctx->tx.skb, NULL);
			goto purge;
		}
		skb = NULL;
purge:
		espintcp_tx_purge(ctx);
	} else {
		err = size;
		skb = NULL;
	}
unlock:
	/* ESP may have been held back for us: release_sock() lets it go. */
	if (!ctx->tx.skb && !skb_queue_empty(&ctx->esp_txq))
		set_bit(ESPINTCP_TX_DEFERRED, &ctx->flags);
	release_sock(sk);
	if (err == -EPIPE && !(msg->msg_flags & MSG_NOSIGNAL))
		send_sig(SIGPIPE, current, 0);
free:
	kfree_skb(skb);
	return err;
}
