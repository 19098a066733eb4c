#include <time.h>

#include "clock.h"

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_realtime_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t clock_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

static int64_t system_realtime(void *ctx)
{
	return clock_realtime_ms();
}

static int64_t system_monotonic(void *ctx)
{
	return clock_monotonic_ms();
}

const struct clock_source clock_system = { system_realtime, system_monotonic, NULL };

int64_t clock_wall_time(const struct clock_source *c, int64_t monotonic_ms)
{
	return c->realtime_ms(c->ctx) + (monotonic_ms - c->monotonic_ms(c->ctx));
}
