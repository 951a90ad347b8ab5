# SPDX-License-Identifier: GPL-2.0
#
# Out-of-tree build of the espintcp modules (RFC 9329 TCP encapsulation of
# IKE and ESP) against a distribution kernel's headers.
#
#   make              build espintcp.ko, esp4.ko, esp6.ko
#   make demo         install missing packages, build, show ESP over TCP in a VM
#   make check        install missing packages, build, run every selftest in a VM
#   make fuzz         install missing packages, build, run the fuzzer for long in a VM
#   make lint         checkpatch.pl --strict and sparse over our C files
#   make dkms-install install with DKMS (root; DKMS_KVER=... for one kernel)
#   make dkms-remove  remove the DKMS installation again
#   make deb          build the espintcp-dkms Debian package into ../
#   make KDIR=...     build against another kernel tree

# The kernel to build for: the running one when its headers are installed,
# else the newest Debian linux-headers-*-amd64 whose linux-image is installed
# too (the host here usually runs a different kernel than the VM boots).
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

selftests: modules
	$(MAKE) -C $(SELFTESTS) KSFT_DIR=$(KSFT_DIR) OUTPUT=$(CURDIR)/$(SELFTESTS)
	# The injector links against espintcp.ko: rebuild it with current CRCs.
	$(MAKE) -C $(KDIR) M=$(CURDIR)/$(SELFTESTS)/inject clean
	$(MAKE) -C $(KDIR) M=$(CURDIR)/$(SELFTESTS)/inject \
		KBUILD_EXTRA_SYMBOLS=$(CURDIR)/Module.symvers modules

check:
	tools/testing/vm/check.sh

demo:
	tools/testing/vm/demo.sh

# The fuzzer with long bounds (ESPINTCP_FUZZ_* in tools/testing/vm/fuzz.sh).
fuzz:
	tools/testing/vm/fuzz.sh

# Throughput ratios (ESP-in-TCP against ESP-in-UDP and no IPsec), one run.
bench:
	tools/testing/vm/bench.sh

# Install for real: DKMS from this tree, or the espintcp-dkms package.
dkms-install:
	scripts/dkms.sh install $(DKMS_KVER)

dkms-remove:
	scripts/dkms.sh remove

deb:
	scripts/deb.sh

lint:
	scripts/lint.sh

.PHONY: all modules clean selftests check demo fuzz bench lint dkms-install dkms-remove deb
