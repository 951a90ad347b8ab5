// SPDX-License-Identifier: GPL-2.0
/*
 * IPv6 ESP xfrm type: the transform itself is shared with IPv4
 * (net/xfrm/esp_*.c); this file adds what only IPv6 knows: the outer mode's
 * header room, ICMPv6 errors, and registration.
 *
 * It replaces the distribution's esp6 module (same name, same alias), adding
 * TCP encapsulation (RFC 9329) to no and UDP encapsulation.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/icmpv6.h>
#include <linux/module.h>
#include <net/ip.h>
#include <net/ip6_route.h>
#include <net/ipv6.h>
#include <net/ndisc.h>
#include <net/xfrm.h>

#include <net/espintcp_esp.h>

static int esp6_init_state(struct xfrm_state *x,
			   struct netlink_ext_ack *extack)
{
	unsigned int mode_hdrlen = 0;

	switch (x->props.mode) {
	case XFRM_MODE_TUNNEL:
		mode_hdrlen = sizeof(struct ipv6hdr);
		break;
	case XFRM_MODE_BEET:
		/* An IPv4 inner header grows into IPv6 plus a pseudo header. */
		if (x->sel.family != AF_INET6)
			mode_hdrlen = IPV4_BEET_PHMAXLEN +
				      sizeof(struct ipv6hdr) -
				      sizeof(struct iphdr);
		break;
	default:
		break;
	}
	return esp_core_init_state(x, mode_hdrlen, extack);
}

static int esp6_err(struct sk_buff *skb, struct inet6_skb_parm *opt,
		    u8 type, u8 code, int offset, __be32 info)
{
	const struct ipv6hdr *iph = (const struct ipv6hdr *)skb->data;
	struct net *net = dev_net(skb->dev);
	const struct ip_esp_hdr *esph;
	struct xfrm_state *x;

	if (type != ICMPV6_PKT_TOOBIG && type != NDISC_REDIRECT)
		return 0;

	esph = (const struct ip_esp_hdr *)(skb->data + offset);
	x = xfrm_state_lookup(net, skb->mark,
			      (const xfrm_address_t *)&iph->daddr, esph->spi,
			      IPPROTO_ESP, AF_INET6);
	if (!x)
		return 0;

	if (type == NDISC_REDIRECT)
		ip6_redirect(skb, net, skb->dev->ifindex, 0,
			     sock_net_uid(net, NULL));
	else
		ip6_update_pmtu(skb, net, info, 0, 0, sock_net_uid(net, NULL));
	xfrm_state_put(x);
	return 0;
}

static const struct xfrm_type esp6_type = {
	.owner		= THIS_MODULE,
	.proto		= IPPROTO_ESP,
	.flags		= XFRM_TYPE_REPLAY_PROT,
	.init_state	= esp6_init_state,
	.destructor	= esp_core_destroy_state,
	.input		= esp_core_input,
	.output		= esp_core_output,
};

static struct xfrm6_protocol esp6_protocol = {
	.handler	= xfrm6_rcv,
	.input_handler	= xfrm_input,
	.cb_handler	= esp_core_rcv_cb,
	.err_handler	= esp6_err,
	.priority	= 0,
};

static int __init esp6_init(void)
{
	int err;

	/* See esp4_init(): never displace another ESP type. */
	err = esp_core_may_register(AF_INET6, KBUILD_MODNAME);
	if (err)
		return err;
	err = xfrm6_protocol_register(&esp6_protocol, IPPROTO_ESP);
	if (err) {
		pr_err("cannot register the ESP protocol handler (%d): is the distribution's esp6 loaded?\n",
		       err);
		return err;
	}
	err = xfrm_register_type(&esp6_type, AF_INET6);
	if (err) {
		xfrm6_protocol_deregister(&esp6_protocol, IPPROTO_ESP);
		return err;
	}
	return 0;
}

static void __exit esp6_exit(void)
{
	xfrm6_protocol_deregister(&esp6_protocol, IPPROTO_ESP);
	xfrm_unregister_type(&esp6_type, AF_INET6);
}

module_init(esp6_init);
module_exit(esp6_exit);
MODULE_DESCRIPTION("IPv6 ESP transform with UDP and TCP (RFC 9329) encapsulation");
MODULE_LICENSE("GPL");
#ifdef ESPINTCP_VERSION
MODULE_VERSION(ESPINTCP_VERSION);
#endif
MODULE_ALIAS_XFRM_TYPE(AF_INET6, XFRM_PROTO_ESP);
