/* SPDX-License-Identifier: GPL-2.0 */
/*
 * espintcp_ike: a minimal IKEv2-shaped driver for the espintcp selftests.
 *
 * It does on the wire and on its sockets what an IKE daemon such as
 * libreswan does with RFC 9329 (UDP first, TCP as fallback, IKETCP prefix,
 * the espintcp ULP, per-socket policy bypass), exchanges IKEv2-shaped
 * messages, derives child SA keys from both nonces and a pre-shared key with
 * HMAC-SHA256, and installs SAs and policies over XFRM netlink. It is a test
 * driver, not an IKE implementation: no Diffie-Hellman, no encrypted
 * payloads, no negotiation.
 */
#ifndef _ESPINTCP_IKE_H
#define _ESPINTCP_IKE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../xfrm_nl.h"

/* Exit codes, also in --help. */
enum {
	EX_OK_ = 0,
	EX_USAGE_ = 1,
	EX_UNREACHABLE = 2,	/* no IKE response over any allowed transport */
	EX_PREFIX = 3,		/* responder: no IKETCP prefix in time */
	EX_NOULP = 4,		/* the espintcp ULP is not available */
	EX_NETLINK = 5,		/* XFRM netlink refused an SA or a policy */
	EX_PROTO = 6,		/* authentication failed, malformed message */
	EX_SYSTEM = 7,		/* any other system error */
};

#define NONCE_LEN	32
#define PRF_LEN		32	/* HMAC-SHA256 */
#define KEY_LEN		20	/* AES-128-GCM key and 4-byte salt */
#define MSG_MAX		4096

/* IKEv2 (RFC 7296 3.1) exchange types, flags and payload types. */
#define IKE_SA_INIT		34
#define IKE_AUTH		35
#define CREATE_CHILD_SA		36
#define INFORMATIONAL		37
#define IKE_FLAG_I		0x08
#define IKE_FLAG_R		0x20
#define PL_SA			33
#define PL_AUTH			39
#define PL_NONCE		40
#define PL_NOTIFY		41
#define PL_DELETE		42
#define PROTO_IKE		1
#define PROTO_ESP		3
#define N_REKEY_SA		16393

struct ike_msg {
	uint64_t spi_i, spi_r;
	uint8_t xchg, flags;
	uint32_t msgid;
	const uint8_t *nonce;		/* NONCE_LEN bytes, or NULL */
	const uint8_t *auth;		/* PRF_LEN bytes, or NULL */
	uint32_t sa_spi;		/* child SA proposal: our inbound SPI */
	uint32_t rekey_spi;		/* REKEY_SA notify, 0 if none */
	uint8_t del_proto;		/* Delete payload, 0 if none */
	uint32_t del_spi;		/* ESP SPI to delete (PROTO_ESP) */
};

int ike_build(const struct ike_msg *m, uint8_t *buf, size_t size);
int ike_parse(const uint8_t *buf, size_t len, struct ike_msg *m);

/* prf.c: HMAC-SHA256 through the kernel's AF_ALG. */
struct iov { const void *p; size_t len; };
int prf(const uint8_t *key, size_t keylen, const struct iov *v, int n,
	uint8_t out[PRF_LEN]);
int prf_plus(const uint8_t *key, size_t keylen, const uint8_t *seed,
	     size_t seedlen, uint8_t *out, size_t len);

/* xfrm.c: SAs and policies over XFRM netlink (xfrm_nl_open()'s socket). */
struct sa_spec {
	int family;
	xfrm_address_t src, dst;
	uint32_t spi, reqid;
	uint8_t mode;			/* XFRM_MODE_TRANSPORT or _TUNNEL */
	const uint8_t *key;		/* KEY_LEN bytes */
	uint16_t encap_type;		/* 0, UDP_ENCAP_ESPINUDP, TCP_ENCAP_ESPINTCP */
	uint16_t sport, dport;		/* host order */
};

struct pol_spec {
	int family;
	xfrm_address_t src, dst;	/* selector */
	uint8_t splen, dplen;
	uint8_t dir;			/* XFRM_POLICY_IN, _OUT, _FWD */
	xfrm_address_t tsrc, tdst;	/* template: the SA's addresses */
	uint32_t reqid;
	uint8_t mode;
};

int xfrm_sa_add(int nl, const struct sa_spec *s);
int xfrm_sa_del(int nl, const struct sa_spec *s);
int xfrm_pol_add(int nl, const struct pol_spec *p);
int xfrm_pol_del(int nl, const struct pol_spec *p);

/* net.c: the IKE sockets. */
int sock_bypass(int fd, int family);
int udp_open(int family, const struct sockaddr_storage *local, socklen_t len);
int tcp_connect_ike(const struct sockaddr_storage *peer, socklen_t len,
		    int timeout_ms);
int tcp_listen_ike(int family, const struct sockaddr_storage *local,
		   socklen_t len);
int tcp_accept_ike(int lsn, int timeout_ms);
int ulp_attach(int fd);
int wait_readable(int fd, int timeout_ms);
unsigned short sock_port(int fd, bool peer);

#endif /* _ESPINTCP_IKE_H */
