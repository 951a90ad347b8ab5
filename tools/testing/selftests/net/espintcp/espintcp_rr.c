// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_rr: IKE message round trips over one espintcp connection, for
 * make bench.
 *
 *   espintcp_rr server ADDR PORT        accept one connection, read its
 *                                       IKETCP prefix, attach the ULP and
 *                                       send back every IKE message until
 *                                       the peer closes
 *   espintcp_rr client ADDR PORT SECS   connect, send IKETCP, attach the
 *                                       ULP, then send a 64-byte IKE
 *                                       message and wait for it to come
 *                                       back, for SECS seconds; print the
 *                                       round trips per second
 *
 * The server prints "listening" once it accepts connections. Both sides
 * check every message they receive, and fail on a lost, short or altered
 * one.
 */

#include <stdbool.h>
#include <time.h>

#include "espintcp_lib.h"

#define RR_LEN	64	/* non-ESP marker and 60 bytes */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Message @i: the non-ESP marker, then a pattern that names @i. */
static void message(uint8_t *p, uint32_t i)
{
	memset(p, 0, 4);
	fill(p + 4, RR_LEN - 4, i);
}

static int serve(int fd)
{
	uint8_t buf[RR_LEN + 1];
	char prefix[6];
	ssize_t n;
	int c;

	c = accept(fd, NULL, NULL);
	if (c < 0 || read_all(c, prefix, sizeof(prefix)) ||
	    memcmp(prefix, "IKETCP", sizeof(prefix)) || attach(c)) {
		perror("server: connection");
		return 1;
	}
	for (;;) {
		n = recv_wait(c, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n != RR_LEN || memcmp(buf, "\0\0\0\0", 4)) {
			fprintf(stderr, "server: message of %zd bytes\n", n);
			return 1;
		}
		if (send(c, buf, n, 0) != n) {
			perror("server: send");
			return 1;
		}
	}
}

static int rr(int fd, struct sockaddr_storage *ss, socklen_t len,
	      double secs)
{
	uint8_t msg[RR_LEN], buf[RR_LEN + 1];
	double start, end;
	uint32_t i;

	if (connect(fd, (void *)ss, len) || write_all(fd, "IKETCP", 6) ||
	    attach(fd)) {
		perror("client: connection");
		return 1;
	}
	start = now();
	end = start + secs;
	for (i = 0; now() < end; i++) {
		message(msg, i);
		if (send(fd, msg, sizeof(msg), 0) != sizeof(msg) ||
		    recv_wait(fd, buf, sizeof(buf)) != sizeof(msg) ||
		    memcmp(buf, msg, sizeof(msg))) {
			fprintf(stderr, "client: round trip %u failed\n", i);
			return 1;
		}
	}
	printf("%.1f\n", i / (now() - start));
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	int fd;
	bool srv;

	srv = argc == 4 && !strcmp(argv[1], "server");
	if (srv || (argc == 5 && !strcmp(argv[1], "client")))
		len = parse_addr(argv[2], atoi(argv[3]), &ss);
	if (!len) {
		fprintf(stderr, "usage: %s server ADDR PORT | client ADDR PORT SECS\n",
			argv[0]);
		return 1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0 || xfrm_bypass(fd, ss.ss_family)) {
		perror("socket");
		return 1;
	}
	if (!srv)
		return rr(fd, &ss, len, atof(argv[4]));

	if (listen_announce(fd, &ss, len, 1))
		return 1;
	return serve(fd);
}
