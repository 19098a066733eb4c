#include <stdarg.h>
#include <stdio.h>

#include "log.h"

int log_max_priority = LOG_INFO;

void log_msg(int priority, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (priority > log_max_priority)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line so that lines from the worker thread never interleave. */
	fprintf(stderr, "<%d>%s\n", priority, line);
}
