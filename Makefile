# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of the espintcp modules (RFC 9329 TCP encapsulation of
# IKE and ESP) against a distribution kernel's headers.
#
#   make              build espintcp.ko, esp4.ko, esp6.ko
#   make demo         install missing packages, build, show ESP over TCP in a VM
#   make check        install missing packages, build, run every selftest in a VM
#   make check-debug  the same on Debian's 6.1 (ESPINTCP_DEBUG_SERIES=6.12: its
#                     6.12) built with KASAN, kmemleak, lockdep, UBSAN
#                     (built once, cached; see README)
#   make fuzz         install missing packages, build, run the fuzzer for long in a VM
#   make fuzz-debug   the same on the debug kernel of make check-debug
#   make bench        A/B ratios against stock esp4/esp6 and upstream (see README)
#   make scale        10,000 espintcp connections with their SAs in a VM
#   make lint         checkpatch.pl --strict and sparse over our C files
#   make dkms-install install with DKMS (root; DKMS_KVER=... for one kernel)
#   make dkms-remove  remove the DKMS installation again
#   make deb          build the espintcp-dkms Debian package into ../
#   make KDIR=...     build against another kernel tree

# The kernel to build for, chosen by scripts/kver.sh: KVER=, else the running
# one when its headers are installed, else Debian's default kernel (the one
# linux-image-amd64 depends on), else the newest generic one with headers.
KVER ?= $(shell scripts/kver.sh)
KDIR ?= /lib/modules/$(KVER)/build

PWD := $(CURDIR)

all: modules

modules:
	@test -n "$(KVER)" -a -d "$(KDIR)" || \
		{ echo "no kernel headers found: install linux-headers-amd64 or set KDIR"; exit 1; }
	$(MAKE) -C $(KDIR) M=$(PWD) modules

SELFTESTS := tools/testing/selftests/net/espintcp
KSFT_DIR = $(shell scripts/linux-source.sh)/tools/testing/selftests

clean:
	$(MAKE) -C $(KDIR) M=$(PWD) clean
	$(MAKE) -C $(SELFTESTS) KSFT_DIR=$(KSFT_DIR) OUTPUT=$(CURDIR)/$(SELFTESTS) clean
	$(MAKE) -C $(KDIR) M=$(CURDIR)/$(SELFTESTS)/inject clean
	rm -rf .bench-ref

selftests: modules
	$(MAKE) -C $(SELFTESTS) KSFT_DIR=$(KSFT_DIR) OUTPUT=$(CURDIR)/$(SELFTESTS)
	# The injector links against espintcp.ko: rebuild it with current CRCs.
	$(MAKE) -C $(KDIR) M=$(CURDIR)/$(SELFTESTS)/inject clean
	$(MAKE) -C $(KDIR) M=$(CURDIR)/$(SELFTESTS)/inject \
		KBUILD_EXTRA_SYMBOLS=$(CURDIR)/Module.symvers modules

check:
	tools/testing/vm/check.sh

# Not in .ci/run (hours): make check on every Debian kernel flavour.
check-kernels:
	tools/testing/vm/check-kernels.sh

# Not in .ci/run: the kernel build takes long. Before merging anything that
# touches net/ or include/.
check-debug:
	tools/testing/vm/check-debug.sh

demo:
	tools/testing/vm/demo.sh

# The fuzzer with long bounds (ESPINTCP_FUZZ_* in tools/testing/vm/fuzz.sh).
fuzz:
	tools/testing/vm/fuzz.sh

# The same on the debug kernel (make check-debug's checkers and cache).
fuzz-debug:
	tools/testing/vm/fuzz.sh --debug

# A/B ratios of our modules against stock esp4/esp6 and upstream, one run.
bench:
	tools/testing/vm/bench.sh

# 10,000 espintcp connections with an SA pair each, in one VM.
scale:
	tools/testing/vm/scale.sh

# Install for real: DKMS from this tree, or the espintcp-dkms package.
dkms-install:
	scripts/dkms.sh install $(DKMS_KVER)

dkms-remove:
	scripts/dkms.sh remove

deb:
	scripts/deb.sh

lint:
	scripts/lint.sh

.PHONY: all modules clean selftests check check-kernels check-debug demo fuzz fuzz-debug bench scale lint dkms-install dkms-remove deb
