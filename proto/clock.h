/* Clocks in milliseconds, the one definition both sides use: CLOCK_REALTIME for times that
 * go on the wire and into listings, CLOCK_MONOTONIC for deadlines and timeouts. */
#pragma once

#include <stdint.h>

int64_t clock_realtime_ms(void);
int64_t clock_monotonic_ms(void);

/* A source of both clocks, for code whose tests must control time (the revocation engine).
 * clock_system is the real one. */
struct clock_source {
	int64_t (*realtime_ms)(void *ctx);
	int64_t (*monotonic_ms)(void *ctx);
	void *ctx;
};

extern const struct clock_source clock_system;

/* A CLOCK_MONOTONIC time of c as CLOCK_REALTIME milliseconds, for the wire. */
int64_t clock_wall_time(const struct clock_source *c, int64_t monotonic_ms);
