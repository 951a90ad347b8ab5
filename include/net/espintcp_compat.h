/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Differences between the kernels espintcp is built against, driven by the
 * header probes in scripts/compat.mk. Nothing else in the tree tests
 * ESPINTCP_HAVE_* or LINUX_VERSION_CODE.
 */
#ifndef _NET_ESPINTCP_COMPAT_H
#define _NET_ESPINTCP_COMPAT_H

#include <linux/bvec.h>
#include <linux/crypto.h>
#include <linux/socket.h>
#include <linux/uio.h>
#include <linux/udp.h>
#include <net/net_namespace.h>
#include <net/tcp.h>

/*
 * Without netfilter, XFRM's transport-mode input returns the inner protocol
 * for its caller to resubmit (xfrm4_transport_finish()) instead of queueing
 * the packet on; espintcp_rx.c relies on the latter. Debian's kernels all
 * have it.
 */
#if !IS_ENABLED(CONFIG_NETFILTER)
#error "espintcp needs a kernel with CONFIG_NETFILTER"
#endif

static inline struct inet_hashinfo *espintcp_tcp_hashinfo(struct net *net)
{
#ifdef ESPINTCP_HAVE_NETNS_EHASH
	return net->ipv4.tcp_death_row.hashinfo;
#else
	return &tcp_hashinfo;
#endif
}

/*
 * Crypto completion callbacks: 6.3 passes the request's data pointer, older
 * kernels the request. Declare callbacks with ESPINTCP_CRYPTO_CB_ARG and
 * get the data with espintcp_crypto_cb_data().
 */
#ifdef ESPINTCP_HAVE_CRYPTO_CB_DATA
#define ESPINTCP_CRYPTO_CB_ARG void *

static inline void *espintcp_crypto_cb_data(void *data)
{
	return data;
}
#else
#define ESPINTCP_CRYPTO_CB_ARG struct crypto_async_request *

static inline void *espintcp_crypto_cb_data(struct crypto_async_request *req)
{
	return req->data;
}
#endif

/*
 * Zero-copy transmission of a page by TCP, socket lock owned: sendpage up to
 * 6.4, sendmsg() with MSG_SPLICE_PAGES afterwards. @more says that more of
 * the same message follows.
 */
#ifdef ESPINTCP_HAVE_SENDPAGE
static inline int espintcp_tcp_send_page(struct sock *sk, struct page *page,
					 unsigned int off, size_t len,
					 int flags, bool more)
{
	if (more)
		flags |= MSG_MORE | MSG_SENDPAGE_NOTLAST;
	return tcp_sendpage_locked(sk, page, off, len, flags);
}

static inline int espintcp_no_sendpage(struct sock *sk, struct page *page,
				       int offset, size_t size, int flags)
{
	/* A page is not a message: sendfile() and splice() would break
	 * the framing.
	 */
	return -EOPNOTSUPP;
}

static inline void espintcp_refuse_sendpage(struct proto *prot)
{
	prot->sendpage = espintcp_no_sendpage;
}
#else
static inline int espintcp_tcp_send_page(struct sock *sk, struct page *page,
					 unsigned int off, size_t len,
					 int flags, bool more)
{
	struct msghdr msg = { .msg_flags = flags | MSG_SPLICE_PAGES };
	struct bio_vec bv;

	if (more)
		msg.msg_flags |= MSG_MORE;
	bvec_set_page(&bv, page, len, off);
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, &bv, 1, len);
	return tcp_sendmsg_locked(sk, &msg, len);
}

/* sendfile() and splice() reach sendmsg() with MSG_SPLICE_PAGES, which
 * espintcp_sendmsg() refuses: nothing to do.
 */
static inline void espintcp_refuse_sendpage(struct proto *prot)
{
}
#endif

/*
 * ESP-in-UDP of the NAT-T draft (8 zero bytes after the UDP header): kernels
 * that still receive it (Debian's 6.1) keep it in our ESP types, later ones
 * (6.12) refuse it as their own ESP types do.
 */
static inline bool espintcp_udp_non_ike_supported(void)
{
#ifdef ESPINTCP_HAVE_ESPINUDP_NON_IKE
	return true;
#else
	return false;
#endif
}

#endif /* _NET_ESPINTCP_COMPAT_H */
