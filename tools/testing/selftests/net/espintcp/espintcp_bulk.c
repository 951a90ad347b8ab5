// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_bulk: a content-checked TCP transfer for the shell selftests.
 *
 *   espintcp_bulk recv ADDR PORT LEN    accept one connection, read LEN
 *                                       pattern bytes and EOF, exit 0 if intact
 *   espintcp_bulk send ADDR PORT LEN    connect and send LEN pattern bytes
 *
 * The receiver prints "listening" once it accepts connections, and at the
 * end "received LEN bytes in US us": from accept() to EOF, so without the
 * time either process took to start.
 */

#include <stdlib.h>
#include <time.h>

#include "espintcp_lib.h"

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	size_t n;
	struct timespec t0, t1;
	uint8_t *buf;
	int fd, c;

	len = argc == 5 ? parse_addr(argv[2], atoi(argv[3]), &ss) : 0;
	if (!len) {
		fprintf(stderr, "usage: %s recv|send ADDR PORT LEN\n", argv[0]);
		return 1;
	}
	n = strtoul(argv[4], NULL, 0);
	buf = malloc(n + 1);
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (!buf || fd < 0)
		return 1;

	if (!strcmp(argv[1], "send")) {
		fill(buf, n, 3);
		if (connect(fd, (void *)&ss, len) || write_all(fd, buf, n)) {
			perror("send");
			return 1;
		}
		return 0;
	}

	if (listen_announce(fd, &ss, len, 1))
		return 1;
	c = accept(fd, NULL, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (c < 0 || read_all(c, buf, n) || read(c, buf + n, 1) != 0) {
		fprintf(stderr, "recv: transfer incomplete\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (check_fill(buf, n, 3)) {
		fprintf(stderr, "recv: transfer corrupted\n");
		return 1;
	}
	printf("received %zu bytes in %lld us\n", n,
	       (t1.tv_sec - t0.tv_sec) * 1000000LL +
	       (t1.tv_nsec - t0.tv_nsec) / 1000);
	return 0;
}
