// SPDX-License-Identifier: GPL-2.0
/*
 * The IKE sockets, set up the way libreswan does (see
 * Documentation/networking/espintcp.rst): a per-socket XFRM policy bypass
 * before anything is sent, ESP-in-UDP decoding on the UDP socket, and for
 * TCP the IKETCP prefix followed by the espintcp ULP.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/udp.h>
#include <netinet/tcp.h>

#include "../espintcp_lib.h"
#include "ike.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef UDP_ENCAP
#define UDP_ENCAP 100
#endif

int sock_bypass(int fd, int family)
{
	return xfrm_bypass(fd, family);
}

int wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n;

	do {
		n = poll(&pfd, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : -1;
}

int udp_open(int family, const struct sockaddr_storage *local, socklen_t len)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int type = UDP_ENCAP_ESPINUDP, one = 1;

	if (fd < 0)
		return -1;
	if (sock_bypass(fd, family) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (const struct sockaddr *)local, len) ||
	    setsockopt(fd, IPPROTO_UDP, UDP_ENCAP, &type, sizeof(type))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Connect with a deadline, send the prefix; the caller attaches the ULP. */
int tcp_connect_ike(const struct sockaddr_storage *peer, socklen_t len,
		    int timeout_ms)
{
	int fd = socket(peer->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct pollfd pfd = { .events = POLLOUT };
	socklen_t elen = sizeof(int);
	int err = 0, fl;

	if (fd < 0)
		return -1;
	pfd.fd = fd;
	fl = fcntl(fd, F_GETFL);
	if (sock_bypass(fd, peer->ss_family) ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		goto fail;
	if (connect(fd, (const struct sockaddr *)peer, len) &&
	    errno != EINPROGRESS)
		goto fail;
	if (poll(&pfd, 1, timeout_ms) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) {
		errno = err ?: ETIMEDOUT;
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fl) || send(fd, "IKETCP", 6, MSG_NOSIGNAL) != 6)
		goto fail;
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

int tcp_listen_ike(int family, const struct sockaddr_storage *local,
		   socklen_t len)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		return -1;
	if (sock_bypass(fd, family) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (const struct sockaddr *)local, len) || listen(fd, 8)) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * RFC 9329 section 6: the responder reads the whole prefix, within a
 * deadline, before anything else. Returns the connection or -1 with errno
 * ETIMEDOUT (no prefix in time) or EPROTO (not IKETCP).
 */
int tcp_accept_ike(int lsn, int timeout_ms)
{
	char prefix[6];
	size_t got = 0;
	int fd, err;

	fd = accept4(lsn, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -1;
	while (got < sizeof(prefix)) {
		ssize_t n;

		if (wait_readable(fd, timeout_ms)) {
			errno = ETIMEDOUT;
			goto fail;
		}
		n = recv(fd, prefix + got, sizeof(prefix) - got, 0);
		if (n <= 0) {
			errno = n ? errno : ECONNRESET;
			goto fail;
		}
		got += n;
	}
	if (memcmp(prefix, "IKETCP", 6)) {
		errno = EPROTO;
		goto fail;
	}
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

int ulp_attach(int fd)
{
	static const char name[] = "espintcp";

	return setsockopt(fd, IPPROTO_TCP, TCP_ULP, name, sizeof(name));
}

unsigned short sock_port(int fd, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len) :
			getsockname(fd, (struct sockaddr *)&ss, &len);

	if (rc)
		return 0;
	return ntohs(ss.ss_family == AF_INET ?
		     ((struct sockaddr_in *)&ss)->sin_port :
		     ((struct sockaddr_in6 *)&ss)->sin6_port);
}
