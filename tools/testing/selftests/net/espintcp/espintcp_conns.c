// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_conns: many idle espintcp connections, for espintcp_scale.sh.
 *
 *   espintcp_conns server ADDR PORT N   accept N connections, read each
 *                                       one's IKETCP prefix, attach the ULP
 *   espintcp_conns client ADDR PORT N   open N connections: connect, send
 *                                       IKETCP, attach the ULP; print each
 *                                       one's local port, a line each
 *
 * Both print "ready" once all N are set up and hold them until a line (or
 * the end) on standard input; then they close them all, print "closed" and
 * exit. The server prints "listening" once it accepts connections. Any
 * failure is fatal: exit status 1 with the reason on standard error.
 */

#include <stdbool.h>
#include <sys/resource.h>

#include "espintcp_lib.h"

static int local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (void *)&ss, &len))
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int open_one(bool srv, int lfd, const struct sockaddr_storage *ss,
		    socklen_t len)
{
	char prefix[6];
	int fd;

	if (srv) {
		fd = accept(lfd, NULL, NULL);
		if (fd < 0 || read_all(fd, prefix, sizeof(prefix)) ||
		    memcmp(prefix, "IKETCP", sizeof(prefix)) || attach(fd))
			return -1;
		return fd;
	}
	fd = socket(ss->ss_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (const void *)ss, len) ||
	    write_all(fd, "IKETCP", 6) || attach(fd))
		return -1;
	printf("%d\n", local_port(fd));
	return fd;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	struct rlimit rl;
	socklen_t len = 0;
	int lfd = -1, n = 0, i, *fds;
	char line[16];
	bool srv;

	srv = argc == 5 && !strcmp(argv[1], "server");
	if (srv || (argc == 5 && !strcmp(argv[1], "client"))) {
		len = parse_addr(argv[2], atoi(argv[3]), &ss);
		n = atoi(argv[4]);
	}
	if (!len || n <= 0) {
		fprintf(stderr, "usage: %s server|client ADDR PORT N\n", argv[0]);
		return 1;
	}
	fds = calloc(n, sizeof(*fds));
	rl.rlim_cur = n + 64;
	rl.rlim_max = n + 64;
	if (!fds || setrlimit(RLIMIT_NOFILE, &rl)) {
		perror("setup");
		return 1;
	}

	if (srv) {
		lfd = socket(ss.ss_family, SOCK_STREAM, 0);
		if (lfd < 0 || listen_announce(lfd, &ss, len, 4096))
			return 1;
	}
	for (i = 0; i < n; i++) {
		fds[i] = open_one(srv, lfd, &ss, len);
		if (fds[i] < 0) {
			fprintf(stderr, "%s: connection %d: %s\n", argv[1], i,
				strerror(errno));
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);

	if (!fgets(line, sizeof(line), stdin) && ferror(stdin)) {
		perror("stdin");
		return 1;
	}
	for (i = 0; i < n; i++)
		close(fds[i]);
	if (lfd >= 0)
		close(lfd);
	printf("closed\n");
	free(fds);
	return 0;
}
