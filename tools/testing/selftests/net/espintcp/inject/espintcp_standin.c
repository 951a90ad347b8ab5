// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_standin: a test-only module that stands in for a kernel built with
 * its own espintcp (CONFIG_INET_ESPINTCP) by registering a TCP ULP of that
 * name. While it is loaded, our espintcp.ko must refuse to load, with a
 * reason in the kernel log, and leave the ULP list as it found it.
 */

#include <linux/module.h>
#include <net/tcp.h>

static int standin_init(struct sock *sk)
{
	return -EOPNOTSUPP;
}

static struct tcp_ulp_ops standin_ulp __read_mostly = {
	.name	= "espintcp",
	.owner	= THIS_MODULE,
	.init	= standin_init,
};

static int __init standin_module_init(void)
{
	return tcp_register_ulp(&standin_ulp);
}

static void __exit standin_module_exit(void)
{
	tcp_unregister_ulp(&standin_ulp);
}

module_init(standin_module_init);
module_exit(standin_module_exit);

MODULE_DESCRIPTION("Test only: a TCP ULP named espintcp, as a kernel with CONFIG_INET_ESPINTCP has");
MODULE_LICENSE("GPL");
