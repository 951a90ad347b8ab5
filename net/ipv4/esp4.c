// SPDX-License-Identifier: GPL-2.0
/*
 * IPv4 ESP xfrm type: the transform itself is shared with IPv6
 * (net/xfrm/esp_*.c); this file adds what only IPv4 knows: the outer mode's
 * header room, ICMP errors, and registration.
 *
 * It replaces the distribution's esp4 module (same name, same alias), adding
 * TCP encapsulation (RFC 9329) to no and UDP encapsulation.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/icmp.h>
#include <linux/module.h>
#include <net/icmp.h>
#include <net/ip.h>
#include <net/route.h>
#include <net/xfrm.h>

#include <net/espintcp_esp.h>

static int esp4_init_state(struct xfrm_state *x,
			   struct netlink_ext_ack *extack)
{
	unsigned int mode_hdrlen = 0;

	switch (x->props.mode) {
	case XFRM_MODE_TUNNEL:
		mode_hdrlen = sizeof(struct iphdr);
		break;
	case XFRM_MODE_BEET:
		/* Room for the pseudo header carrying IPv4 options. */
		if (x->sel.family != AF_INET6)
			mode_hdrlen = IPV4_BEET_PHMAXLEN;
		break;
	default:
		break;
	}
	return esp_core_init_state(x, mode_hdrlen, extack);
}

/* Path MTU and redirects for our SAs (RFC 4303 3.4.4 leaves it to IP). */
static int esp4_err(struct sk_buff *skb, u32 info)
{
	const struct iphdr *iph = (const struct iphdr *)skb->data;
	struct net *net = dev_net(skb->dev);
	const struct ip_esp_hdr *esph;
	struct xfrm_state *x;

	switch (icmp_hdr(skb)->type) {
	case ICMP_DEST_UNREACH:
		if (icmp_hdr(skb)->code != ICMP_FRAG_NEEDED)
			return 0;
		break;
	case ICMP_REDIRECT:
		break;
	default:
		return 0;
	}

	esph = (const struct ip_esp_hdr *)(skb->data + (iph->ihl << 2));
	x = xfrm_state_lookup(net, skb->mark,
			      (const xfrm_address_t *)&iph->daddr, esph->spi,
			      IPPROTO_ESP, AF_INET);
	if (!x)
		return 0;

	if (icmp_hdr(skb)->type == ICMP_DEST_UNREACH)
		ipv4_update_pmtu(skb, net, info, 0, IPPROTO_ESP);
	else
		ipv4_redirect(skb, net, 0, IPPROTO_ESP);
	xfrm_state_put(x);
	return 0;
}

static const struct xfrm_type esp4_type = {
	.owner		= THIS_MODULE,
	.proto		= IPPROTO_ESP,
	.flags		= XFRM_TYPE_REPLAY_PROT,
	.init_state	= esp4_init_state,
	.destructor	= esp_core_destroy_state,
	.input		= esp_core_input,
	.output		= esp_core_output,
};

static struct xfrm4_protocol esp4_protocol = {
	.handler	= xfrm4_rcv,
	.input_handler	= xfrm_input,
	.cb_handler	= esp_core_rcv_cb,
	.err_handler	= esp4_err,
	.priority	= 0,
};

static int __init esp4_init(void)
{
	int err;

	/* Refuse to sit next to another ESP type: xfrm_register_type()
	 * would warn and take over its place. The protocol handler goes
	 * first, it fails cleanly (-EEXIST) if the slot is taken.
	 */
	err = esp_core_may_register(AF_INET, KBUILD_MODNAME);
	if (err)
		return err;
	err = xfrm4_protocol_register(&esp4_protocol, IPPROTO_ESP);
	if (err) {
		pr_err("cannot register the ESP protocol handler (%d): is the distribution's esp4 loaded?\n",
		       err);
		return err;
	}
	err = xfrm_register_type(&esp4_type, AF_INET);
	if (err) {
		xfrm4_protocol_deregister(&esp4_protocol, IPPROTO_ESP);
		return err;
	}
	return 0;
}

static void __exit esp4_exit(void)
{
	xfrm4_protocol_deregister(&esp4_protocol, IPPROTO_ESP);
	xfrm_unregister_type(&esp4_type, AF_INET);
}

module_init(esp4_init);
module_exit(esp4_exit);
MODULE_DESCRIPTION("IPv4 ESP transform with UDP and TCP (RFC 9329) encapsulation");
MODULE_LICENSE("GPL");
#ifdef ESPINTCP_VERSION
MODULE_VERSION(ESPINTCP_VERSION);
#endif
MODULE_ALIAS_XFRM_TYPE(AF_INET, XFRM_PROTO_ESP);
