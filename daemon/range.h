/* A byte range of a BAR, as the daemon and its backends pass it around. */
#pragma once

#include <stdint.h>

struct range {
	uint64_t offset;
	uint64_t length;
};
