/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Differences between the kernels espintcp is built against, driven by the
 * header probes in scripts/compat.mk. Nothing else in the tree tests
 * ESPINTCP_HAVE_* or LINUX_VERSION_CODE.
 */
#ifndef _NET_ESPINTCP_COMPAT_H
#define _NET_ESPINTCP_COMPAT_H

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

#endif /* _NET_ESPINTCP_COMPAT_H */
