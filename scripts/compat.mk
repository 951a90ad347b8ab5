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
