// SPDX-License-Identifier: GPL-2.0
/*
 * LD_PRELOAD shim for make check-debug: multiplies every alarm() by
 * ESPINTCP_TIMEOUT_SCALE, so that the kselftest harness's per-test timeouts
 * (TEST_F_TIMEOUT, 30s by default) stretch with a kernel that KASAN and
 * lockdep make several times slower. Without the variable, or with 1,
 * alarm() is unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

unsigned int alarm(unsigned int seconds)
{
	static unsigned int (*real_alarm)(unsigned int);
	const char *s = getenv("ESPINTCP_TIMEOUT_SCALE");
	unsigned long scale = s ? strtoul(s, NULL, 10) : 1;

	if (!real_alarm)
		real_alarm = (unsigned int (*)(unsigned int))
			     dlsym(RTLD_NEXT, "alarm");
	if (scale > 1 && seconds) {
		if (seconds > UINT_MAX / scale)
			seconds = UINT_MAX;
		else
			seconds *= scale;
	}
	return real_alarm(seconds);
}
