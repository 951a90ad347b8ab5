// SPDX-License-Identifier: GPL-2.0
/* HMAC-SHA256 and RFC 7296 prf+ through AF_ALG: the kernel's own crypto. */

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/if_alg.h>
#include <sys/socket.h>

#include "ike.h"

#ifndef SOL_ALG
#define SOL_ALG 279
#endif

int prf(const uint8_t *key, size_t keylen, const struct iov *v, int n,
	uint8_t out[PRF_LEN])
{
	struct sockaddr_alg sa = {
		.salg_family = AF_ALG,
		.salg_type = "hash",
		.salg_name = "hmac(sha256)",
	};
	int tfm, op = -1, i, ret = -1;

	tfm = socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (tfm < 0)
		return -1;
	if (bind(tfm, (struct sockaddr *)&sa, sizeof(sa)) ||
	    setsockopt(tfm, SOL_ALG, ALG_SET_KEY, key, keylen))
		goto out;
	op = accept(tfm, NULL, 0);
	if (op < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (send(op, v[i].p, v[i].len, i < n - 1 ? MSG_MORE : 0) !=
		    (ssize_t)v[i].len)
			goto out;
	if (n == 0 && send(op, "", 0, 0) < 0)
		goto out;
	if (read(op, out, PRF_LEN) == PRF_LEN)
		ret = 0;
out:
	if (op >= 0)
		close(op);
	close(tfm);
	return ret;
}

/* prf+ (RFC 7296 2.13): T1 = prf(K, S | 1), Tn = prf(K, Tn-1 | S | n). */
int prf_plus(const uint8_t *key, size_t keylen, const uint8_t *seed,
	     size_t seedlen, uint8_t *out, size_t len)
{
	uint8_t t[PRF_LEN];
	uint8_t cnt = 1;
	size_t done = 0;

	while (done < len) {
		struct iov v[3];
		int n = 0;
		size_t k;

		if (cnt > 1)
			v[n++] = (struct iov){ t, PRF_LEN };
		v[n++] = (struct iov){ seed, seedlen };
		v[n++] = (struct iov){ &cnt, 1 };
		if (prf(key, keylen, v, n, t))
			return -1;
		k = len - done < PRF_LEN ? len - done : PRF_LEN;
		memcpy(out + done, t, k);
		done += k;
		cnt++;
	}
	return 0;
}
