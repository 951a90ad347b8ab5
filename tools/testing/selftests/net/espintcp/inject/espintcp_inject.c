// SPDX-License-Identifier: GPL-2.0
/*
 * espintcp_inject: a test-only module that plays the ESP type's part of the
 * espintcp in-kernel API. It finds an espintcp socket by its 4-tuple, as an
 * SA with TCP encapsulation would, and sends framed ESP packets to it from a
 * softirq hrtimer, so the selftests can exercise the transmit slot, the ESP
 * queue and close races without any ESP transform.
 *
 * debugfs espintcp_inject/ctl takes
 *   "start FAMILY LOCAL LPORT REMOTE RPORT COUNT SIZE [TICK_US]"  or  "stop"
 * (COUNT 0: until stopped; a batch every TICK_US microseconds, default 20)
 * and espintcp_inject/status reads "sent=N ok=N enobufs=N enotconn=N
 * other=N done=0|1".
 */

#include <linux/debugfs.h>
#include <linux/hrtimer.h>
#include <linux/inet.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <net/espintcp.h>
#include <net/xfrm.h>

#define INJECT_BATCH	16
#define INJECT_TICK_US	20	/* default: as fast as TCG gets */
#define INJECT_SPI	0x45535000	/* "ESP\0" */

static struct {
	struct mutex lock;		/* ctl writes */
	struct hrtimer timer;
	struct espintcp_ctx *ctx;
	u32 count, size, tick_us;
	atomic_t sent, ok, enobufs, enotconn, other;
	bool done;
} inj;

static struct dentry *inj_dir;

static void inj_xmit_one(u32 seq)
{
	struct sk_buff *skb;
	__be32 *p;
	int err;

	skb = alloc_skb(inj.size, GFP_ATOMIC);
	if (!skb) {
		atomic_inc(&inj.other);
		return;
	}
	memset(skb_put(skb, inj.size), 0xa5, inj.size);
	*(__be16 *)skb->data = htons(inj.size);
	p = (__be32 *)(skb->data + ESPINTCP_LEN_SIZE);
	p[0] = htonl(INJECT_SPI);
	p[1] = htonl(seq);

	err = espintcp_xmit(inj.ctx, skb);
	if (!err)
		atomic_inc(&inj.ok);
	else if (err == -ENOBUFS)
		atomic_inc(&inj.enobufs);
	else if (err == -ENOTCONN)
		atomic_inc(&inj.enotconn);
	else
		atomic_inc(&inj.other);
}

/* Softirq context, like XFRM output from the network stack. */
static enum hrtimer_restart inj_tick(struct hrtimer *timer)
{
	int i;

	for (i = 0; i < INJECT_BATCH; i++) {
		u32 seq = atomic_read(&inj.sent);

		if (inj.count && seq >= inj.count)
			break;
		inj_xmit_one(seq);
		atomic_inc(&inj.sent);
	}
	if (inj.count && atomic_read(&inj.sent) >= inj.count) {
		WRITE_ONCE(inj.done, true);
		return HRTIMER_NORESTART;
	}
	hrtimer_forward_now(timer, ns_to_ktime(inj.tick_us * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

static void inj_stop(void)
{
	hrtimer_cancel(&inj.timer);
	if (inj.ctx)
		espintcp_ctx_put(inj.ctx);
	inj.ctx = NULL;
}

static int inj_parse_addr(int family, const char *s, xfrm_address_t *a)
{
	if (family == AF_INET)
		return in4_pton(s, -1, (u8 *)&a->a4, -1, NULL) ? 0 : -EINVAL;
	return in6_pton(s, -1, (u8 *)&a->in6, -1, NULL) ? 0 : -EINVAL;
}

static int inj_start(char *args)
{
	struct xfrm_encap_tmpl encap = { .encap_type = TCP_ENCAP_ESPINTCP };
	char local[64], remote[64];
	struct xfrm_state *x;
	u16 lport, rport;
	int family, err, n;

	inj.tick_us = INJECT_TICK_US;
	n = sscanf(args, "%d %63s %hu %63s %hu %u %u %u", &family, local,
		   &lport, remote, &rport, &inj.count, &inj.size, &inj.tick_us);
	if (n != 7 && n != 8)
		return -EINVAL;
	if ((family != AF_INET && family != AF_INET6) ||
	    inj.size < ESPINTCP_LEN_SIZE + 8 || inj.size > ESPINTCP_MAX_MSG ||
	    !inj.tick_us || inj.tick_us > USEC_PER_SEC)
		return -EINVAL;

	/* Only the fields espintcp_ctx_lookup() reads, as an outbound SA. */
	x = kzalloc(sizeof(*x), GFP_KERNEL);
	if (!x)
		return -ENOMEM;
	x->props.family = family;
	x->encap = &encap;
	encap.encap_sport = htons(lport);
	encap.encap_dport = htons(rport);
	err = inj_parse_addr(family, local, &x->props.saddr) ? :
	      inj_parse_addr(family, remote, &x->id.daddr);
	if (!err) {
		inj.ctx = espintcp_ctx_lookup(current->nsproxy->net_ns, x);
		if (!inj.ctx)
			err = -ENOENT;
	}
	kfree(x);
	if (err)
		return err;

	atomic_set(&inj.sent, 0);
	atomic_set(&inj.ok, 0);
	atomic_set(&inj.enobufs, 0);
	atomic_set(&inj.enotconn, 0);
	atomic_set(&inj.other, 0);
	WRITE_ONCE(inj.done, false);
	hrtimer_start(&inj.timer, 0, HRTIMER_MODE_REL_SOFT);
	return 0;
}

static ssize_t inj_ctl_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	char buf[256];
	int err = 0;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';

	mutex_lock(&inj.lock);
	inj_stop();
	if (!strncmp(buf, "start ", 6))
		err = inj_start(buf + 6);
	else if (strncmp(buf, "stop", 4))
		err = -EINVAL;
	mutex_unlock(&inj.lock);
	return err ? err : len;
}

static int inj_status_show(struct seq_file *m, void *v)
{
	seq_printf(m, "sent=%d ok=%d enobufs=%d enotconn=%d other=%d done=%d\n",
		   atomic_read(&inj.sent), atomic_read(&inj.ok),
		   atomic_read(&inj.enobufs), atomic_read(&inj.enotconn),
		   atomic_read(&inj.other), READ_ONCE(inj.done));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(inj_status);

static const struct file_operations inj_ctl_fops = {
	.owner	= THIS_MODULE,
	.write	= inj_ctl_write,
};

static int __init inj_init(void)
{
	mutex_init(&inj.lock);
	hrtimer_init(&inj.timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	inj.timer.function = inj_tick;
	inj_dir = debugfs_create_dir("espintcp_inject", NULL);
	debugfs_create_file("ctl", 0200, inj_dir, NULL, &inj_ctl_fops);
	debugfs_create_file("status", 0400, inj_dir, NULL, &inj_status_fops);
	return 0;
}

static void __exit inj_exit(void)
{
	debugfs_remove_recursive(inj_dir);
	mutex_lock(&inj.lock);
	inj_stop();
	mutex_unlock(&inj.lock);
}

module_init(inj_init);
module_exit(inj_exit);
MODULE_DESCRIPTION("espintcp selftest: ESP transmit from softirq context");
MODULE_LICENSE("GPL");
