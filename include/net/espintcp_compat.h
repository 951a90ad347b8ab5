/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Differences between the kernels espintcp is built against, driven by the
 * header probes in scripts/compat.mk. Nothing else in the tree tests
 * ESPINTCP_HAVE_* or LINUX_VERSION_CODE.
 */
#ifndef _NET_ESPINTCP_COMPAT_H
#define _NET_ESPINTCP_COMPAT_H

#include <linux/crypto.h>
#include <net/net_namespace.h>
#include <net/tcp.h>

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

#endif /* _NET_ESPINTCP_COMPAT_H */
