// SPDX-License-Identifier: GPL-2.0
/*
 * IKEv2-shaped messages (RFC 7296 section 3): the real header and generic
 * payload headers, with the few payloads the driver uses. No SK payload:
 * nothing is encrypted.
 */

#include <string.h>
#include <arpa/inet.h>

#include "ike.h"

#define HDR_LEN 28

struct wbuf {
	uint8_t *p;
	size_t len, size;
	uint8_t *np;			/* previous Next Payload field */
};

static int put(struct wbuf *w, const void *d, size_t len)
{
	if (w->len + len > w->size)
		return -1;
	memcpy(w->p + w->len, d, len);
	w->len += len;
	return 0;
}

static int put8(struct wbuf *w, uint8_t v)
{
	return put(w, &v, 1);
}

static int put16(struct wbuf *w, uint16_t v)
{
	v = htons(v);
	return put(w, &v, 2);
}

static int put32(struct wbuf *w, uint32_t v)
{
	v = htonl(v);
	return put(w, &v, 4);
}

static int put64(struct wbuf *w, uint64_t v)
{
	return put32(w, v >> 32) || put32(w, (uint32_t)v);
}

/* Generic payload header; the body follows, @len bytes. */
static int payload(struct wbuf *w, uint8_t type, size_t len)
{
	*w->np = type;
	if (w->len + 4 > w->size)
		return -1;
	w->np = w->p + w->len;
	return put8(w, 0) || put8(w, 0) || put16(w, 4 + len);
}

int ike_build(const struct ike_msg *m, uint8_t *buf, size_t size)
{
	struct wbuf w = { .p = buf, .size = size };
	uint32_t total;

	if (put64(&w, m->spi_i) || put64(&w, m->spi_r))
		return -1;
	w.np = buf + w.len;
	if (put8(&w, 0) || put8(&w, 0x20) || put8(&w, m->xchg) ||
	    put8(&w, m->flags) || put32(&w, m->msgid) || put32(&w, 0))
		return -1;

	if (m->sa_spi) {
		/* SA with one ESP proposal carrying our inbound SPI. */
		if (payload(&w, PL_SA, 12) || put8(&w, 0) || put8(&w, 0) ||
		    put16(&w, 12) || put8(&w, 1) || put8(&w, PROTO_ESP) ||
		    put8(&w, 4) || put8(&w, 0) || put32(&w, m->sa_spi))
			return -1;
	}
	if (m->nonce && (payload(&w, PL_NONCE, NONCE_LEN) ||
			 put(&w, m->nonce, NONCE_LEN)))
		return -1;
	if (m->auth && (payload(&w, PL_AUTH, 4 + PRF_LEN) ||
			put8(&w, 2) || put8(&w, 0) || put16(&w, 0) ||
			put(&w, m->auth, PRF_LEN)))
		return -1;
	if (m->rekey_spi && (payload(&w, PL_NOTIFY, 8) ||
			     put8(&w, PROTO_ESP) || put8(&w, 4) ||
			     put16(&w, N_REKEY_SA) || put32(&w, m->rekey_spi)))
		return -1;
	if (m->del_proto == PROTO_IKE &&
	    (payload(&w, PL_DELETE, 4) || put8(&w, PROTO_IKE) ||
	     put8(&w, 0) || put16(&w, 0)))
		return -1;
	if (m->del_proto == PROTO_ESP &&
	    (payload(&w, PL_DELETE, 8) || put8(&w, PROTO_ESP) ||
	     put8(&w, 4) || put16(&w, 1) || put32(&w, m->del_spi)))
		return -1;

	total = htonl(w.len);
	memcpy(buf + 24, &total, 4);
	return w.len;
}

static uint16_t get16(const uint8_t *p)
{
	return (p[0] << 8) | p[1];
}

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

static int parse_payload(uint8_t type, const uint8_t *b, size_t len,
			 struct ike_msg *m)
{
	switch (type) {
	case PL_SA:
		if (len < 12 || b[5] != PROTO_ESP || b[6] != 4)
			return -1;
		m->sa_spi = get32(b + 8);
		return m->sa_spi ? 0 : -1;
	case PL_NONCE:
		if (len != NONCE_LEN)
			return -1;
		m->nonce = b;
		return 0;
	case PL_AUTH:
		if (len != 4 + PRF_LEN)
			return -1;
		m->auth = b + 4;
		return 0;
	case PL_NOTIFY:
		if (len >= 8 && get16(b + 2) == N_REKEY_SA && b[1] == 4)
			m->rekey_spi = get32(b + 4);
		return 0;
	case PL_DELETE:
		if (len < 4)
			return -1;
		m->del_proto = b[0];
		if (b[0] == PROTO_ESP) {
			if (len < 8 || b[1] != 4 || get16(b + 2) < 1)
				return -1;
			m->del_spi = get32(b + 4);
		}
		return 0;
	default:
		return 0;		/* not critical: ignored */
	}
}

int ike_parse(const uint8_t *buf, size_t len, struct ike_msg *m)
{
	size_t off = HDR_LEN;
	uint8_t np;

	memset(m, 0, sizeof(*m));
	if (len < HDR_LEN || buf[17] != 0x20 || get32(buf + 24) != len)
		return -1;
	m->spi_i = get64(buf);
	m->spi_r = get64(buf + 8);
	np = buf[16];
	m->xchg = buf[18];
	m->flags = buf[19];
	m->msgid = get32(buf + 20);

	while (np) {
		uint16_t plen;

		if (off + 4 > len)
			return -1;
		plen = get16(buf + off + 2);
		if (plen < 4 || off + plen > len ||
		    parse_payload(np, buf + off + 4, plen - 4, m))
			return -1;
		np = buf[off];
		off += plen;
	}
	return off == len ? 0 : -1;
}
