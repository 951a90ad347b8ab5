// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_ike: bring up ESP over UDP or TCP (RFC 9329) between two hosts the
 * way an IKE daemon does. See ike.h for what it is not, and --help.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/udp.h>
#include <sys/random.h>
#include <sys/signalfd.h>

#include "ike.h"

#define MAX_CONNS 4

enum transport { TR_UDP, TR_TCP, TR_FALLBACK };

struct cfg {
	bool initiator;
	int family;
	struct sockaddr_storage local, peer;	/* IKE port filled in */
	socklen_t alen;
	xfrm_address_t laddr, paddr;
	const char *psk;
	enum transport transport;
	unsigned short port;
	uint8_t mode;
	xfrm_address_t lnet, rnet;
	uint8_t lplen, rplen;
	const char *status;
	int udp_timeout_ms, udp_tries, timeout_ms, prefix_timeout_ms, probe_ms;
	uint32_t reqid;
};

struct child {
	uint32_t spi_in, spi_out;
	uint8_t key_in[KEY_LEN], key_out[KEY_LEN];
	bool installed;
};

/* Where a message came from or goes to. */
struct via {
	int tcp;				/* connection, or -1 for UDP */
	struct sockaddr_storage from;		/* UDP peer */
	socklen_t fromlen;
};

struct ike {
	struct cfg *c;
	int nl, udp, lsn, sig;
	int tcp;				/* the IKE SA's connection or -1 */
	int conns[MAX_CONNS];			/* responder: accepted, unbound */
	bool on_tcp;
	struct sockaddr_storage udp_peer;
	socklen_t udp_peerlen;
	uint64_t spi_i, spi_r;
	uint8_t ni[NONCE_LEN], nr[NONCE_LEN], skeyseed[PRF_LEN];
	uint8_t init_req[MSG_MAX], init_resp[MSG_MAX];
	int init_req_len, init_resp_len;
	uint32_t next_msgid;
	/* The last response sent, resent for a retransmitted request. */
	uint8_t last_resp[MSG_MAX];
	int last_resp_len;
	uint32_t last_msgid;
	struct child child, old;
	bool established, policies;
	unsigned int rekeys, reconnects, moves;
};

static void say(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "espintcp_ike: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void rnd(void *p, size_t len)
{
	if (getrandom(p, len, 0) != (ssize_t)len)
		memset(p, 0x5a, len);
}

static uint32_t new_spi(void)
{
	uint32_t spi;

	do
		rnd(&spi, sizeof(spi));
	while (spi < 0x100);
	return spi;
}

static void write_status(struct ike *k, const char *state)
{
	char tmp[512];
	FILE *f;

	if (!k->c->status)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", k->c->status);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "state=%s\ntransport=%s\n", state, k->on_tcp ? "tcp" : "udp");
	fprintf(f, "tcp_local_port=%u\ntcp_peer_port=%u\n",
		k->on_tcp ? sock_port(k->tcp, false) : 0,
		k->on_tcp ? sock_port(k->tcp, true) : 0);
	fprintf(f, "spi_in=0x%08x\nspi_out=0x%08x\n", k->child.spi_in,
		k->child.spi_out);
	fprintf(f, "rekeys=%u\nreconnects=%u\nmoves_to_udp=%u\n", k->rekeys,
		k->reconnects, k->moves);
	fclose(f);
	rename(tmp, k->c->status);
}

/* ---- SAs and policies ---- */

static void sa_specs(struct ike *k, const struct child *ch, struct sa_spec *out,
		     struct sa_spec *in)
{
	unsigned short lp = k->c->port, pp = k->c->port;
	uint16_t type = UDP_ENCAP_ESPINUDP;

	if (k->on_tcp) {
		type = TCP_ENCAP_ESPINTCP;
		lp = sock_port(k->tcp, false);
		pp = sock_port(k->tcp, true);
	}
	memset(out, 0, sizeof(*out));
	out->family = k->c->family;
	out->reqid = k->c->reqid;
	out->mode = k->c->mode;
	out->encap_type = type;
	*in = *out;

	out->src = k->c->laddr;
	out->dst = k->c->paddr;
	out->spi = ch->spi_out;
	out->key = ch->key_out;
	out->sport = lp;
	out->dport = pp;

	in->src = k->c->paddr;
	in->dst = k->c->laddr;
	in->spi = ch->spi_in;
	in->key = ch->key_in;
	in->sport = pp;
	in->dport = lp;
}

static int child_install(struct ike *k, struct child *ch)
{
	struct sa_spec out, in;
	int err;

	sa_specs(k, ch, &out, &in);
	err = xfrm_sa_add(k->nl, &in);
	if (!err)
		err = xfrm_sa_add(k->nl, &out);
	if (err) {
		say("cannot install SA: %s", strerror(-err));
		return err;
	}
	ch->installed = true;
	say("child SA installed over %s: in 0x%08x out 0x%08x", k->on_tcp ?
	    "tcp" : "udp", ch->spi_in, ch->spi_out);
	return 0;
}

static void child_remove(struct ike *k, struct child *ch)
{
	struct sa_spec out, in;

	if (!ch->installed)
		return;
	sa_specs(k, ch, &out, &in);
	xfrm_sa_del(k->nl, &in);
	xfrm_sa_del(k->nl, &out);
	ch->installed = false;
}

/* Move the installed SAs to the current transport (replace). */
static int rebind(struct ike *k)
{
	struct child *chs[] = { &k->child, &k->old };
	size_t i;

	for (i = 0; i < 2; i++) {
		if (!chs[i]->installed)
			continue;
		child_remove(k, chs[i]);
		if (child_install(k, chs[i]))
			return -1;
	}
	return 0;
}

static void pol_specs(struct ike *k, struct pol_spec p[3])
{
	struct cfg *c = k->c;
	int i;

	for (i = 0; i < 3; i++) {
		memset(&p[i], 0, sizeof(p[i]));
		p[i].family = c->family;
		p[i].reqid = c->reqid;
		p[i].mode = c->mode;
	}
	p[0].dir = XFRM_POLICY_OUT;
	p[0].src = c->lnet;
	p[0].splen = c->lplen;
	p[0].dst = c->rnet;
	p[0].dplen = c->rplen;
	p[0].tsrc = c->laddr;
	p[0].tdst = c->paddr;
	for (i = 1; i < 3; i++) {
		p[i].dir = i == 1 ? XFRM_POLICY_IN : XFRM_POLICY_FWD;
		p[i].src = c->rnet;
		p[i].splen = c->rplen;
		p[i].dst = c->lnet;
		p[i].dplen = c->lplen;
		p[i].tsrc = c->paddr;
		p[i].tdst = c->laddr;
	}
}

static int policies_install(struct ike *k)
{
	struct pol_spec p[3];
	int i, n = k->c->mode == XFRM_MODE_TUNNEL ? 3 : 2, err;

	pol_specs(k, p);
	for (i = 0; i < n; i++) {
		err = xfrm_pol_add(k->nl, &p[i]);
		if (err) {
			say("cannot install policy: %s", strerror(-err));
			while (i--)
				xfrm_pol_del(k->nl, &p[i]);
			return err;
		}
	}
	k->policies = true;
	return 0;
}

static void teardown(struct ike *k)
{
	struct pol_spec p[3];
	int i;

	child_remove(k, &k->child);
	child_remove(k, &k->old);
	if (k->policies) {
		pol_specs(k, p);
		for (i = 0; i < 3; i++)
			xfrm_pol_del(k->nl, &p[i]);
		k->policies = false;
	}
}

/* ---- keys ---- */

static int derive_ike(struct ike *k)
{
	uint8_t nn[2 * NONCE_LEN];
	struct iov v = { k->c->psk, strlen(k->c->psk) };

	memcpy(nn, k->ni, NONCE_LEN);
	memcpy(nn + NONCE_LEN, k->nr, NONCE_LEN);
	return prf(nn, sizeof(nn), &v, 1, k->skeyseed);
}

/* RFC 7296 2.15 in spirit: each side signs its first message and the
 * other side's nonce.
 */
static int auth_value(struct ike *k, bool initiator, uint8_t out[PRF_LEN])
{
	struct iov v[3];

	v[0] = (struct iov){ initiator ? "initiator" : "responder", 9 };
	if (initiator) {
		v[1] = (struct iov){ k->init_req, k->init_req_len };
		v[2] = (struct iov){ k->nr, NONCE_LEN };
	} else {
		v[1] = (struct iov){ k->init_resp, k->init_resp_len };
		v[2] = (struct iov){ k->ni, NONCE_LEN };
	}
	return prf(k->skeyseed, PRF_LEN, v, 3, out);
}

/* Keys of a child SA: prf+(SKEYSEED, Ni | Nr | SPIi | SPIr). */
static int derive_child(struct ike *k, struct child *ch, const uint8_t *ni,
			const uint8_t *nr, uint32_t spi_i, uint32_t spi_r)
{
	uint8_t seed[2 * NONCE_LEN + 8], km[2 * KEY_LEN];
	bool ini = k->c->initiator;

	memcpy(seed, ni, NONCE_LEN);
	memcpy(seed + NONCE_LEN, nr, NONCE_LEN);
	spi_i = htonl(spi_i);
	spi_r = htonl(spi_r);
	memcpy(seed + 2 * NONCE_LEN, &spi_i, 4);
	memcpy(seed + 2 * NONCE_LEN + 4, &spi_r, 4);
	if (prf_plus(k->skeyseed, PRF_LEN, seed, sizeof(seed), km, sizeof(km)))
		return -1;
	/* The first key protects initiator -> responder. */
	memcpy(ini ? ch->key_out : ch->key_in, km, KEY_LEN);
	memcpy(ini ? ch->key_in : ch->key_out, km + KEY_LEN, KEY_LEN);
	return 0;
}

/* ---- messages on the wire: non-ESP marker, then the IKE message ---- */

static int send_msg(struct ike *k, const struct via *v, const uint8_t *msg,
		    int len)
{
	uint8_t buf[4 + MSG_MAX];
	ssize_t n;

	memset(buf, 0, 4);
	memcpy(buf + 4, msg, len);
	if (v->tcp >= 0)
		n = send(v->tcp, buf, len + 4, 0);	/* SIGPIPE ignored */
	else
		n = sendto(k->udp, buf, len + 4, 0,
			   (const struct sockaddr *)&v->from, v->fromlen);
	return n == len + 4 ? 0 : -1;
}

/* One message from @fd; 0, -1 on error, -2 at end of stream. */
static int recv_msg(int fd, bool tcp, uint8_t *msg, int *len, struct via *v)
{
	uint8_t buf[4 + MSG_MAX];
	ssize_t n;

	v->tcp = tcp ? fd : -1;
	v->fromlen = sizeof(v->from);
	n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT,
		     (struct sockaddr *)&v->from, &v->fromlen);
	if (n == 0 && tcp)
		return -2;
	if (n < 0)
		return errno == EAGAIN ? -1 : (tcp ? -2 : -1);
	if (n < 4 || buf[0] || buf[1] || buf[2] || buf[3])
		return -1;		/* keepalive or not IKE */
	*len = n - 4;
	memcpy(msg, buf + 4, *len);
	return 0;
}

static void via_current(struct ike *k, struct via *v)
{
	v->tcp = k->on_tcp ? k->tcp : -1;
	v->from = k->udp_peer;
	v->fromlen = k->udp_peerlen;
}

/*
 * Send a request and wait for its response, over @v. UDP retransmits with
 * a doubling timeout. Returns 0, -1 (no response), -2 (connection broke).
 */
static int exchange(struct ike *k, const struct via *v, struct ike_msg *req,
		    uint8_t *resp, int *resp_len, struct ike_msg *r, int tries)
{
	uint8_t msg[MSG_MAX];
	int len, timeout, t;

	req->msgid = k->next_msgid;
	len = ike_build(req, msg, sizeof(msg));
	if (len < 0)
		return -1;
	if (req->xchg == IKE_SA_INIT) {
		memcpy(k->init_req, msg, len);
		k->init_req_len = len;
	}
	timeout = v->tcp >= 0 ? k->c->timeout_ms : k->c->udp_timeout_ms;
	for (t = 0; t < (v->tcp >= 0 ? 1 : tries); t++, timeout *= 2) {
		struct timespec t0, now;

		if (send_msg(k, v, msg, len))
			return v->tcp >= 0 ? -2 : -1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;;) {
			struct via from;
			int left, rc;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left = timeout - ((now.tv_sec - t0.tv_sec) * 1000 +
					  (now.tv_nsec - t0.tv_nsec) / 1000000);
			if (left <= 0 || wait_readable(v->tcp >= 0 ? v->tcp :
						       k->udp, left))
				break;
			rc = recv_msg(v->tcp >= 0 ? v->tcp : k->udp,
				      v->tcp >= 0, resp, resp_len, &from);
			if (rc == -2)
				return -2;
			if (rc || ike_parse(resp, *resp_len, r))
				continue;
			if ((r->flags & IKE_FLAG_R) && r->msgid == req->msgid &&
			    r->spi_i == req->spi_i) {
				k->next_msgid++;
				return 0;
			}
		}
	}
	return -1;
}

/* ---- initiator ---- */

static int init_sa(struct ike *k, const struct via *v, int tries)
{
	uint8_t resp[MSG_MAX];
	struct ike_msg req = { 0 }, r;
	int len, rc;

	rnd(&k->spi_i, sizeof(k->spi_i));
	rnd(k->ni, NONCE_LEN);
	k->spi_r = 0;
	k->next_msgid = 0;
	req.spi_i = k->spi_i;
	req.xchg = IKE_SA_INIT;
	req.flags = IKE_FLAG_I;
	req.nonce = k->ni;
	rc = exchange(k, v, &req, resp, &len, &r, tries);
	if (rc)
		return rc;
	if (!r.nonce || !r.spi_r)
		return -3;
	k->spi_r = r.spi_r;
	memcpy(k->nr, r.nonce, NONCE_LEN);
	memcpy(k->init_resp, resp, len);
	k->init_resp_len = len;
	return derive_ike(k) ? -3 : 0;
}

static int connect_tcp(struct ike *k)
{
	int fd = tcp_connect_ike(&k->c->peer, k->c->alen, k->c->timeout_ms);

	if (fd < 0) {
		say("cannot connect to the peer over TCP: %s", strerror(errno));
		return EX_UNREACHABLE;
	}
	if (ulp_attach(fd)) {
		say("cannot attach the espintcp ULP: %s (is espintcp.ko loaded?)",
		    strerror(errno));
		close(fd);
		return EX_NOULP;
	}
	if (k->tcp >= 0)
		close(k->tcp);
	k->tcp = fd;
	k->on_tcp = true;
	return 0;
}

static int initiator_start(struct ike *k)
{
	uint8_t resp[MSG_MAX], auth[PRF_LEN], want[PRF_LEN];
	struct ike_msg req = { 0 }, r;
	struct via v;
	int rc = -1, len;

	k->udp_peer = k->c->peer;
	k->udp_peerlen = k->c->alen;
	if (k->c->transport != TR_TCP) {
		k->on_tcp = false;
		via_current(k, &v);
		say("IKE_SA_INIT over UDP");
		rc = init_sa(k, &v, k->c->udp_tries);
		if (rc && k->c->transport == TR_UDP) {
			say("no answer over UDP");
			return rc == -3 ? EX_PROTO : EX_UNREACHABLE;
		}
		if (rc)
			say("no answer over UDP: falling back to TCP");
	}
	if (rc) {
		rc = connect_tcp(k);
		if (rc)
			return rc;
		via_current(k, &v);
		say("IKE_SA_INIT over TCP");
		rc = init_sa(k, &v, 1);
		if (rc) {
			say("IKE_SA_INIT over TCP: %s", rc == -3 ?
			    "malformed response" : "no response");
			return rc == -3 ? EX_PROTO : EX_UNREACHABLE;
		}
	}

	k->child.spi_in = new_spi();
	if (auth_value(k, true, auth))
		return EX_SYSTEM;
	req.spi_i = k->spi_i;
	req.spi_r = k->spi_r;
	req.xchg = IKE_AUTH;
	req.flags = IKE_FLAG_I;
	req.auth = auth;
	req.sa_spi = k->child.spi_in;
	if (exchange(k, &v, &req, resp, &len, &r, k->c->udp_tries)) {
		say("IKE_AUTH: no response");
		return EX_UNREACHABLE;
	}
	if (!r.auth || !r.sa_spi || auth_value(k, false, want) ||
	    memcmp(want, r.auth, PRF_LEN)) {
		say("IKE_AUTH: the responder's AUTH does not verify");
		return EX_PROTO;
	}
	k->child.spi_out = r.sa_spi;
	if (derive_child(k, &k->child, k->ni, k->nr, k->child.spi_in,
			 k->child.spi_out))
		return EX_SYSTEM;
	if (policies_install(k) || child_install(k, &k->child))
		return EX_NETLINK;
	k->established = true;
	say("established over %s", k->on_tcp ? "TCP" : "UDP");
	write_status(k, "established");
	return 0;
}

/* Only the TCP Originator re-establishes (RFC 9329 6), from a new port. */
static int reconnect(struct ike *k)
{
	uint8_t resp[MSG_MAX];
	struct ike_msg req = { 0 }, r;
	struct via v;
	int i, len;

	for (i = 0; i < 5; i++) {
		if (connect_tcp(k))
			continue;
		via_current(k, &v);
		req.spi_i = k->spi_i;
		req.spi_r = k->spi_r;
		req.xchg = INFORMATIONAL;
		req.flags = IKE_FLAG_I;
		if (exchange(k, &v, &req, resp, &len, &r, 1))
			continue;
		if (rebind(k))
			return EX_NETLINK;
		k->reconnects++;
		say("reconnected from port %u", sock_port(k->tcp, false));
		write_status(k, "established");
		return 0;
	}
	return EX_UNREACHABLE;
}

/* A new child SA, then the old one deleted, as CREATE_CHILD_SA would. */
static int rekey(struct ike *k)
{
	uint8_t resp[MSG_MAX], ni[NONCE_LEN];
	struct ike_msg req = { 0 }, r;
	struct child ch = { 0 };
	struct via v;
	int len;

	via_current(k, &v);
	rnd(ni, NONCE_LEN);
	ch.spi_in = new_spi();
	req.spi_i = k->spi_i;
	req.spi_r = k->spi_r;
	req.xchg = CREATE_CHILD_SA;
	req.flags = IKE_FLAG_I;
	req.nonce = ni;
	req.sa_spi = ch.spi_in;
	req.rekey_spi = k->child.spi_in;
	if (exchange(k, &v, &req, resp, &len, &r, k->c->udp_tries) ||
	    !r.nonce || !r.sa_spi)
		return EX_UNREACHABLE;
	ch.spi_out = r.sa_spi;
	if (derive_child(k, &ch, ni, r.nonce, ch.spi_in, ch.spi_out) ||
	    child_install(k, &ch))
		return EX_NETLINK;
	k->old = k->child;
	k->child = ch;

	memset(&req, 0, sizeof(req));
	req.spi_i = k->spi_i;
	req.spi_r = k->spi_r;
	req.xchg = INFORMATIONAL;
	req.flags = IKE_FLAG_I;
	req.del_proto = PROTO_ESP;
	req.del_spi = k->old.spi_in;
	if (exchange(k, &v, &req, resp, &len, &r, k->c->udp_tries)) {
		say("IKE_AUTH: no response");
		return EX_UNREACHABLE;
	}
	child_remove(k, &k->old);
	k->rekeys++;
	say("child SA rekeyed: in 0x%08x out 0x%08x", k->child.spi_in,
	    k->child.spi_out);
	write_status(k, "established");
	return 0;
}

/* On TCP: is UDP back? If the responder answers over UDP, move there. */
static void probe_udp(struct ike *k)
{
	uint8_t resp[MSG_MAX];
	struct ike_msg req = { 0 }, r;
	struct via v = { .tcp = -1 };
	int len;

	v.from = k->udp_peer;
	v.fromlen = k->udp_peerlen;
	req.spi_i = k->spi_i;
	req.spi_r = k->spi_r;
	req.xchg = INFORMATIONAL;
	req.flags = IKE_FLAG_I;
	if (exchange(k, &v, &req, resp, &len, &r, 1))
		return;
	k->on_tcp = false;
	if (rebind(k))
		return;
	/* The Originator closes the connection it no longer needs. */
	close(k->tcp);
	k->tcp = -1;
	k->moves++;
	say("UDP works again: moved back from TCP to UDP");
	write_status(k, "established");
}

/* Tell the peer the IKE SA is gone (best effort). */
static void send_delete(struct ike *k)
{
	uint8_t resp[MSG_MAX];
	struct ike_msg req = { 0 }, r;
	struct via v;
	int len;

	if (!k->established || (k->on_tcp && k->tcp < 0))
		return;
	via_current(k, &v);
	req.spi_i = k->spi_i;
	req.spi_r = k->spi_r;
	req.xchg = INFORMATIONAL;
	req.flags = k->c->initiator ? IKE_FLAG_I : 0;
	req.del_proto = PROTO_IKE;
	exchange(k, &v, &req, resp, &len, &r, 1);
}

/* ---- responder ---- */

static int respond(struct ike *k, const struct via *v, struct ike_msg *res,
		   const struct ike_msg *req)
{
	uint8_t msg[MSG_MAX];
	int len;

	res->spi_i = req->spi_i;
	res->spi_r = k->spi_r;
	res->xchg = req->xchg;
	res->flags = IKE_FLAG_R | (k->c->initiator ? IKE_FLAG_I : 0);
	res->msgid = req->msgid;
	len = ike_build(res, msg, sizeof(msg));
	if (len < 0)
		return -1;
	if (req->xchg == IKE_SA_INIT) {
		memcpy(k->init_resp, msg, len);
		k->init_resp_len = len;
	}
	memcpy(k->last_resp, msg, len);
	k->last_resp_len = len;
	k->last_msgid = req->msgid;
	return send_msg(k, v, msg, len);
}

/* The request came over @v: make that the IKE SA's transport. */
static int adopt(struct ike *k, const struct via *v)
{
	bool tcp = v->tcp >= 0;
	int i;

	/* The initiator chooses the transport; the responder follows. */
	if (k->c->initiator)
		return 0;
	if (!tcp) {
		k->udp_peer = v->from;
		k->udp_peerlen = v->fromlen;
	}
	if (tcp == k->on_tcp && (!tcp || v->tcp == k->tcp))
		return 0;
	if (tcp) {
		for (i = 0; i < MAX_CONNS; i++)
			if (k->conns[i] == v->tcp)
				k->conns[i] = -1;
		if (k->tcp >= 0)
			close(k->tcp);
		k->tcp = v->tcp;
	}
	k->on_tcp = tcp;
	if (!k->established)
		return 0;
	say("peer moved to %s: SAs follow", tcp ? "a new TCP connection" :
	    "UDP");
	if (tcp)
		k->reconnects++;
	else
		k->moves++;
	return rebind(k);
}

/* Returns 0 to go on, 1 when the IKE SA is gone, or an exit code. */
static int handle_request(struct ike *k, const struct via *v,
			  const struct ike_msg *m, const uint8_t *raw, int len)
{
	uint8_t auth[PRF_LEN], nr[NONCE_LEN];
	struct ike_msg res = { 0 };
	struct child ch = { 0 };

	if (m->xchg == IKE_SA_INIT) {
		if (!m->nonce || m->spi_r)
			return 0;
		/* A late copy of the request that created this IKE SA. */
		if (k->spi_r && m->spi_i == k->spi_i) {
			send_msg(k, v, k->init_resp, k->init_resp_len);
			return 0;
		}
		k->spi_i = m->spi_i;
		rnd(&k->spi_r, sizeof(k->spi_r));
		memcpy(k->ni, m->nonce, NONCE_LEN);
		rnd(k->nr, NONCE_LEN);
		/* The initiator's first message, as it sent it. */
		memcpy(k->init_req, raw, len);
		k->init_req_len = len;
		if (derive_ike(k))
			return EX_SYSTEM;
		res.nonce = k->nr;
		if (adopt(k, v))
			return EX_NETLINK;
		respond(k, v, &res, m);
		return 0;
	}
	if (m->spi_i != k->spi_i || m->spi_r != k->spi_r || !k->spi_r)
		return 0;

	switch (m->xchg) {
	case IKE_AUTH:
		if (k->established || !m->auth || !m->sa_spi ||
		    auth_value(k, true, auth) ||
		    memcmp(auth, m->auth, PRF_LEN)) {
			say("IKE_AUTH: the initiator's AUTH does not verify");
			return EX_PROTO;
		}
		if (adopt(k, v))
			return EX_NETLINK;
		k->child.spi_out = m->sa_spi;
		k->child.spi_in = new_spi();
		if (derive_child(k, &k->child, k->ni, k->nr, m->sa_spi,
				 k->child.spi_in))
			return EX_SYSTEM;
		if (policies_install(k) || child_install(k, &k->child))
			return EX_NETLINK;
		if (auth_value(k, false, auth))
			return EX_SYSTEM;
		res.auth = auth;
		res.sa_spi = k->child.spi_in;
		respond(k, v, &res, m);
		k->established = true;
		say("established over %s", k->on_tcp ? "TCP" : "UDP");
		break;
	case CREATE_CHILD_SA:
		if (!k->established || !m->nonce || !m->sa_spi)
			return 0;
		if (adopt(k, v))
			return EX_NETLINK;
		rnd(nr, NONCE_LEN);
		ch.spi_out = m->sa_spi;
		ch.spi_in = new_spi();
		if (derive_child(k, &ch, m->nonce, nr, m->sa_spi, ch.spi_in) ||
		    child_install(k, &ch))
			return EX_NETLINK;
		child_remove(k, &k->old);
		k->old = k->child;
		k->child = ch;
		res.nonce = nr;
		res.sa_spi = ch.spi_in;
		respond(k, v, &res, m);
		k->rekeys++;
		say("child SA rekeyed: in 0x%08x out 0x%08x", ch.spi_in,
		    ch.spi_out);
		break;
	case INFORMATIONAL:
		if (adopt(k, v))
			return EX_NETLINK;
		if (m->del_proto == PROTO_IKE) {
			respond(k, v, &res, m);
			say("the peer deleted the IKE SA");
			return 1;
		}
		if (m->del_proto == PROTO_ESP) {
			struct child *c = k->old.spi_out == m->del_spi ?
					  &k->old : &k->child;

			if (c->spi_out == m->del_spi) {
				res.del_proto = PROTO_ESP;
				res.del_spi = c->spi_in;
				child_remove(k, c);
			}
		}
		respond(k, v, &res, m);
		break;
	default:
		return 0;
	}
	write_status(k, k->established ? "established" : "connecting");
	return 0;
}

/* A message on @fd: a request to handle, or a connection that ended. */
static int on_readable(struct ike *k, int fd, bool tcp)
{
	uint8_t buf[MSG_MAX];
	struct ike_msg m;
	struct via v;
	int len, rc, i;

	rc = recv_msg(fd, tcp, buf, &len, &v);
	if (rc == -2) {
		for (i = 0; i < MAX_CONNS; i++)
			if (k->conns[i] == fd)
				k->conns[i] = -1;
		close(fd);
		if (fd != k->tcp)
			return 0;
		k->tcp = -1;
		if (!k->c->initiator)
			return 0;
		say("the TCP connection broke: reconnecting");
		return reconnect(k);
	}
	if (rc || ike_parse(buf, len, &m) || (m.flags & IKE_FLAG_R))
		return 0;
	/*
	 * RFC 7296 2.1: a retransmitted request gets the same response
	 * again, it is not processed twice.
	 */
	if (k->last_resp_len && m.spi_i == k->spi_i &&
	    m.msgid == k->last_msgid &&
	    (m.spi_r == k->spi_r || m.xchg == IKE_SA_INIT)) {
		send_msg(k, &v, k->last_resp, k->last_resp_len);
		return 0;
	}
	return handle_request(k, &v, &m, buf, len);
}

static int on_accept(struct ike *k)
{
	int fd, i;

	fd = tcp_accept_ike(k->lsn, k->c->prefix_timeout_ms);
	if (fd < 0) {
		say("TCP connection without the IKETCP prefix: %s",
		    strerror(errno));
		return k->established || errno != ETIMEDOUT ? 0 : EX_PREFIX;
	}
	if (ulp_attach(fd)) {
		say("cannot attach the espintcp ULP: %s (is espintcp.ko loaded?)",
		    strerror(errno));
		close(fd);
		return EX_NOULP;
	}
	for (i = 0; i < MAX_CONNS; i++) {
		if (k->conns[i] < 0) {
			k->conns[i] = fd;
			return 0;
		}
	}
	close(fd);
	return 0;
}

/* Abort the connection (RST), as a broken path would. */
static void break_tcp(struct ike *k)
{
	struct linger lg = { 1, 0 };

	if (!k->on_tcp || k->tcp < 0)
		return;
	setsockopt(k->tcp, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(k->tcp);
	k->tcp = -1;
}

static int run(struct ike *k)
{
	for (;;) {
		struct pollfd pfd[4 + MAX_CONNS];
		int n = 0, i, rc, timeout = -1;
		struct signalfd_siginfo si;

		pfd[n++] = (struct pollfd){ .fd = k->sig, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = k->udp, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = k->lsn, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = k->tcp, .events = POLLIN };
		for (i = 0; i < MAX_CONNS; i++)
			pfd[n++] = (struct pollfd){ .fd = k->conns[i],
						    .events = POLLIN };
		if (k->c->initiator && k->on_tcp && k->c->probe_ms &&
		    k->udp >= 0)
			timeout = k->c->probe_ms;

		rc = poll(pfd, n, timeout);
		if (rc < 0 && errno != EINTR)
			return EX_SYSTEM;
		if (rc == 0) {
			probe_udp(k);
			continue;
		}
		if (pfd[0].revents & POLLIN &&
		    read(k->sig, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGUSR1 && k->c->initiator) {
				rc = rekey(k);
				if (rc)
					return rc;
			} else if (si.ssi_signo == SIGUSR2 && k->c->initiator) {
				break_tcp(k);
				rc = reconnect(k);
				if (rc)
					return rc;
			} else if (si.ssi_signo == SIGTERM ||
				   si.ssi_signo == SIGINT) {
				send_delete(k);
				return 0;
			}
			continue;
		}
		if (pfd[2].revents & POLLIN) {
			rc = on_accept(k);
			if (rc)
				return rc;
			continue;
		}
		/*
		 * One message per round: handling it may close or adopt
		 * connections, which makes the other results stale.
		 */
		for (i = 1; i < n; i++) {
			if (i == 2 || !(pfd[i].revents & (POLLIN | POLLERR |
							  POLLHUP)))
				continue;
			rc = on_readable(k, pfd[i].fd, i != 1);
			if (rc == 1)
				return 0;
			if (rc)
				return rc;
			break;
		}
	}
}

/* ---- configuration ---- */

static int parse_addr(int family, const char *s, xfrm_address_t *a)
{
	memset(a, 0, sizeof(*a));
	return inet_pton(family, s, a) == 1 ? 0 : -1;
}

static int parse_net(int family, const char *s, xfrm_address_t *a,
		     uint8_t *plen)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash;
	int max = family == AF_INET ? 32 : 128;

	snprintf(buf, sizeof(buf), "%s", s);
	slash = strchr(buf, '/');
	*plen = max;
	if (slash) {
		*slash = 0;
		*plen = atoi(slash + 1);
		if (*plen > max)
			return -1;
	}
	return parse_addr(family, buf, a);
}

static void sockaddr_of(int family, const xfrm_address_t *a,
			unsigned short port, struct sockaddr_storage *ss,
			socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)ss;

		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		memcpy(&s->sin_addr, a, 4);
		*len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)ss;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port);
		memcpy(&s->sin6_addr, a, 16);
		*len = sizeof(*s);
	}
}

static const char help_text[] =
"usage: espintcp_ike --initiator|--responder --local ADDR --peer ADDR --psk KEY\n"
"                    [--transport udp|tcp|fallback] [--port N]\n"
"                    [--tunnel LOCAL_NET REMOTE_NET] [--reqid N]\n"
"                    [--status FILE] [--probe-udp MS] [--udp-timeout MS]\n"
"                    [--udp-tries N] [--timeout MS] [--prefix-timeout MS]\n"
"\n"
"Brings up one IKE SA and one child SA (AES-GCM) between this host and the\n"
"peer, over UDP or over TCP with the espintcp ULP (RFC 9329), and installs\n"
"SAs and policies over XFRM netlink. The initiator tries UDP first with\n"
"--transport fallback (the default) and opens TCP when UDP stays silent.\n"
"\n"
"Signals: SIGTERM/SIGINT delete the IKE SA and remove SAs and policies;\n"
"SIGUSR1 rekeys the child SA (initiator); SIGUSR2 aborts the TCP connection\n"
"and reconnects from a new port, as after a broken path (initiator).\n"
"With --probe-udp, an initiator on TCP asks over UDP every MS milliseconds\n"
"and moves the SAs back to UDP once the responder answers there.\n"
"--status FILE is rewritten with key=value lines at every change.\n"
"\n"
"Exit status:\n"
"  0  the IKE SA was deleted (by a signal or by the peer)\n"
"  1  usage error\n"
"  2  peer unreachable: no IKE response over any allowed transport\n"
"  3  responder: a TCP connection did not send IKETCP in time\n"
"  4  the espintcp ULP is not available (module not loaded)\n"
"  5  XFRM netlink refused an SA or a policy\n"
"  6  IKE failure: authentication or malformed messages\n"
"  7  other system error\n";

static void print_help(FILE *f)
{
	fputs(help_text, f);
}

static int parse_args(int argc, char **argv, struct cfg *c)
{
	static const struct option opts[] = {
		{ "initiator", no_argument, NULL, 'i' },
		{ "responder", no_argument, NULL, 'r' },
		{ "local", required_argument, NULL, 'l' },
		{ "peer", required_argument, NULL, 'p' },
		{ "psk", required_argument, NULL, 'k' },
		{ "transport", required_argument, NULL, 't' },
		{ "port", required_argument, NULL, 'P' },
		{ "tunnel", required_argument, NULL, 'T' },
		{ "reqid", required_argument, NULL, 'R' },
		{ "status", required_argument, NULL, 's' },
		{ "probe-udp", required_argument, NULL, 'u' },
		{ "udp-timeout", required_argument, NULL, 'U' },
		{ "udp-tries", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "prefix-timeout", required_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ }
	};
	const char *local = NULL, *peer = NULL, *lnet = NULL, *rnet = NULL;
	int o;

	memset(c, 0, sizeof(*c));
	c->transport = TR_FALLBACK;
	c->port = 4500;
	c->mode = XFRM_MODE_TRANSPORT;
	c->reqid = 1;
	c->udp_timeout_ms = 500;
	c->udp_tries = 3;
	c->timeout_ms = 10000;
	c->prefix_timeout_ms = 5000;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'i':
			c->initiator = true;
			break;
		case 'r':
			c->initiator = false;
			break;
		case 'l':
			local = optarg;
			break;
		case 'p':
			peer = optarg;
			break;
		case 'k':
			c->psk = optarg;
			break;
		case 't':
			if (!strcmp(optarg, "udp"))
				c->transport = TR_UDP;
			else if (!strcmp(optarg, "tcp"))
				c->transport = TR_TCP;
			else if (!strcmp(optarg, "fallback"))
				c->transport = TR_FALLBACK;
			else
				return -1;
			break;
		case 'P':
			c->port = atoi(optarg);
			break;
		case 'T':
			if (optind >= argc)
				return -1;
			c->mode = XFRM_MODE_TUNNEL;
			lnet = optarg;
			rnet = argv[optind++];
			break;
		case 'R':
			c->reqid = strtoul(optarg, NULL, 0);
			break;
		case 's':
			c->status = optarg;
			break;
		case 'u':
			c->probe_ms = atoi(optarg);
			break;
		case 'U':
			c->udp_timeout_ms = atoi(optarg);
			break;
		case 'n':
			c->udp_tries = atoi(optarg);
			break;
		case 'o':
			c->timeout_ms = atoi(optarg);
			break;
		case 'x':
			c->prefix_timeout_ms = atoi(optarg);
			break;
		case 'h':
			print_help(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (!local || !peer || !c->psk || !*c->psk || optind != argc)
		return -1;
	c->family = strchr(local, ':') ? AF_INET6 : AF_INET;
	if (parse_addr(c->family, local, &c->laddr) ||
	    parse_addr(c->family, peer, &c->paddr))
		return -1;
	if (c->mode == XFRM_MODE_TUNNEL) {
		if (parse_net(c->family, lnet, &c->lnet, &c->lplen) ||
		    parse_net(c->family, rnet, &c->rnet, &c->rplen))
			return -1;
	} else {
		c->lnet = c->laddr;
		c->rnet = c->paddr;
		c->lplen = c->family == AF_INET ? 32 : 128;
		c->rplen = c->lplen;
	}
	sockaddr_of(c->family, &c->laddr, c->port, &c->local, &c->alen);
	sockaddr_of(c->family, &c->paddr, c->port, &c->peer, &c->alen);
	return 0;
}

int main(int argc, char **argv)
{
	struct cfg cfg;
	struct ike k = { .c = &cfg, .udp = -1, .lsn = -1, .tcp = -1 };
	sigset_t mask;
	int rc, i;

	if (parse_args(argc, argv, &cfg)) {
		print_help(stderr);
		return EX_USAGE_;
	}
	for (i = 0; i < MAX_CONNS; i++)
		k.conns[i] = -1;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/*
	 * A send() on a broken connection fails with EPIPE. Not MSG_NOSIGNAL:
	 * upstream's espintcp refuses every flag but MSG_DONTWAIT, and make
	 * bench runs this driver over it.
	 */
	signal(SIGPIPE, SIG_IGN);
	k.sig = signalfd(-1, &mask, SFD_CLOEXEC);
	k.nl = xfrm_nl_open();
	if (k.sig < 0 || k.nl < 0) {
		say("cannot open XFRM netlink: %s", strerror(errno));
		return k.nl < 0 ? EX_NETLINK : EX_SYSTEM;
	}

	/* Both roles keep the UDP port; the responder listens on TCP too. */
	if (!cfg.initiator || cfg.transport != TR_TCP) {
		k.udp = udp_open(cfg.family, &cfg.local, cfg.alen);
		if (k.udp < 0) {
			say("cannot open UDP port %u: %s", cfg.port,
			    strerror(errno));
			return EX_SYSTEM;
		}
	}
	if (!cfg.initiator) {
		k.lsn = tcp_listen_ike(cfg.family, &cfg.local, cfg.alen);
		if (k.lsn < 0) {
			say("cannot listen on TCP port %u: %s", cfg.port,
			    strerror(errno));
			return EX_SYSTEM;
		}
		write_status(&k, "listening");
		rc = 0;
	} else {
		write_status(&k, "connecting");
		rc = initiator_start(&k);
	}
	if (!rc)
		rc = run(&k);
	teardown(&k);
	write_status(&k, "closed");
	say("SAs and policies removed, exiting (%d)", rc);
	return rc;
}
