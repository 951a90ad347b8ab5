# SPDX-License-Identifier: GPL-2.0
#
# The one place that adapts to the kernel we build against. Each probe looks
# for a declaration in the target's headers (never at version numbers: Debian
# backports fixes into its stable kernels) and turns it into a -D flag that
# include/net/espintcp_compat.h consumes.

compat_hdr = $(firstword $(wildcard $(srctree)/include/$(1) $(objtree)/include/$(1)))
compat_has = $(shell grep -qsE '$(2)' $(call compat_hdr,$(1)) && echo -D$(3))

# 6.1+: TCP hash tables may be per network namespace.
ESPINTCP_COMPAT_FLAGS += $(call compat_has,net/netns/ipv4.h,struct inet_hashinfo[[:space:]]*\*hashinfo,ESPINTCP_HAVE_NETNS_EHASH)
# 6.3+: crypto completion callbacks get the request's data pointer.
compat_crypto_cb_re := typedef void [(][*]crypto_completion_t[)][(]void [*]
ESPINTCP_COMPAT_FLAGS += $(call compat_has,linux/crypto.h,$(compat_crypto_cb_re),ESPINTCP_HAVE_CRYPTO_CB_DATA)
# Up to 6.4: TCP takes pages through sendpage; later kernels take them through
# sendmsg() with MSG_SPLICE_PAGES. Debian's 6.1 defines that flag without
# honouring it in TCP, so the probe looks for the function, not the flag.
compat_sendpage_re := int tcp_sendpage_locked[(]
ESPINTCP_COMPAT_FLAGS += $(call compat_has,net/tcp.h,$(compat_sendpage_re),ESPINTCP_HAVE_SENDPAGE)
# Until 6.9 (Debian: 6.1) ESP-in-UDP of the draft NAT-T (UDP_ENCAP_ESPINUDP_NON_IKE)
# is supported; later kernels mark it unused in the uapi header and their ESP
# types refuse it.
compat_non_ike_re := UDP_ENCAP_ESPINUDP_NON_IKE[[:space:]]+1[[:space:]]+/[*][[:space:]]*draft
ESPINTCP_COMPAT_FLAGS += $(call compat_has,uapi/linux/udp.h,$(compat_non_ike_re),ESPINTCP_HAVE_ESPINUDP_NON_IKE)
