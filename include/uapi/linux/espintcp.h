/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * espintcp: socket diagnostics of the RFC 9329 TCP upper layer protocol.
 *
 * sock_diag (inet_diag) reports a TCP socket's ULP in the INET_DIAG_ULP_INFO
 * nest: INET_ULP_INFO_NAME is "espintcp", and INET_ULP_INFO_ESPINTCP nests the
 * per-socket counters below, each a u64.
 */
#ifndef _UAPI_LINUX_ESPINTCP_H
#define _UAPI_LINUX_ESPINTCP_H

#include <linux/inet_diag.h>

/* Next free INET_ULP_INFO_* value after INET_ULP_INFO_MPTCP. */
#define INET_ULP_INFO_ESPINTCP	(INET_ULP_INFO_MPTCP + 1)

enum {
	ESPINTCP_INFO_UNSPEC,
	ESPINTCP_INFO_PAD,
	ESPINTCP_INFO_IKE_RX,		/* IKE messages received */
	ESPINTCP_INFO_IKE_TX,		/* IKE messages sent */
	ESPINTCP_INFO_ESP_RX,		/* ESP messages handed to XFRM */
	ESPINTCP_INFO_ESP_TX,		/* ESP messages sent */
	ESPINTCP_INFO_KEEPALIVE_RX,	/* keepalives received and dropped */
	ESPINTCP_INFO_IKE_RX_DROPS,	/* IKE dropped: receive buffer full */
	ESPINTCP_INFO_ESP_RX_DROPS,	/* ESP dropped before XFRM */
	ESPINTCP_INFO_BAD_RX,		/* messages too short to classify */
	ESPINTCP_INFO_ESP_TX_DROPS,	/* ESP dropped: queue full, closing, bad */
	ESPINTCP_INFO_IKE_RXQ,		/* IKE messages waiting for recv() */
	ESPINTCP_INFO_ESP_TXQ,		/* ESP messages waiting for TCP */
	ESPINTCP_INFO_TX_WORK,		/* runs of the transmit work */
	ESPINTCP_INFO_ESP_TX_CONGESTION,	/* of ESP_TX_DROPS: ESP queue full */
	ESPINTCP_INFO_ESP_TXQ_BYTES,	/* truesize of ESP waiting for TCP */
	ESPINTCP_INFO_RX_UNSTALL,	/* partial message read early: small window */
	__ESPINTCP_INFO_MAX,
};

#define ESPINTCP_INFO_MAX	(__ESPINTCP_INFO_MAX - 1)

#endif /* _UAPI_LINUX_ESPINTCP_H */
