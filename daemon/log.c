#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

int log_max_priority = LOG_INFO;

static bool on_terminal;
static bool on_journal;

/* The lines of one turn of the event loop, written together when it ends (log_flush): a
 * reset that ends a thousand leases makes one write, not a thousand, and the holders' events
 * go out before the lines are written. Only the thread that corked uses the buffer (the
 * worker thread's lines are written at once). */
static char cork_buf[32768];
static size_t cork_len;
static __thread bool corked;

void log_init(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;
	unsigned long long dev, ino;

	on_terminal = isatty(STDERR_FILENO);
	/* "DEV:INO" of the stream systemd connected; it is ours only if stderr is that file. */
	on_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
		     fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool log_to_journal(void)
{
	return on_journal;
}

static const char *level_name(int priority)
{
	static const char *const names[] = { "emerg",	"alert",  "crit", "error",
					     "warning", "notice", "info", "debug" };

	return priority >= 0 && priority <= LOG_DEBUG ? names[priority] : "?";
}

/* "<priority>line\n" in one write, so that lines from the worker thread never interleave;
 * formatted once, straight into the buffer that is written. A short write or an error has
 * nowhere to be reported. */
static void log_plain(int priority, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void log_plain(int priority, const char *fmt, va_list ap)
{
	char line[1032];
	size_t len = (size_t)snprintf(line, sizeof(line), "<%d>", priority);
	size_t room = sizeof(line) - len - 1; /* one byte stays for the newline */
	int n = vsnprintf(line + len, room, fmt, ap);

	if (n > 0)
		len += (size_t)n < room ? (size_t)n : room - 1;
	line[len++] = '\n';
	if (!corked) {
		(void)!write(STDERR_FILENO, line, len);
		return;
	}
	if (cork_len + len > sizeof(cork_buf))
		log_flush();
	memcpy(cork_buf + cork_len, line, len);
	cork_len += len;
}

void log_cork(void)
{
	corked = true;
}

void log_flush(void)
{
	size_t done = 0;

	/* Whole lines only, as one write does for one; a failure has nowhere to be told. */
	while (done < cork_len) {
		ssize_t n = write(STDERR_FILENO, cork_buf + done, cork_len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	cork_len = 0;
}

void log_uncork(void)
{
	log_flush();
	corked = false;
}

/* A person reading: local time and the level's name. One fprintf per line, as above. */
static void log_terminal(int priority, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void log_terminal(int priority, const char *fmt, va_list ap)
{
	char line[1024], when[32];
	struct timespec ts;
	struct tm tm;

	vsnprintf(line, sizeof(line), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ld %s: %s\n", when, ts.tv_nsec / 1000000, level_name(priority),
		line);
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	if (priority > log_max_priority)
		return;
	va_start(ap, fmt);
	if (on_terminal && !on_journal)
		log_terminal(priority, fmt, ap);
	else
		log_plain(priority, fmt, ap);
	va_end(ap);
}

bool log_ratelimit_allow(struct log_ratelimit *rl, int64_t now_ms, unsigned *ret_suppressed)
{
	if (now_ms - rl->window_start_ms >= (int64_t)rl->interval_ms ||
	    now_ms < rl->window_start_ms) {
		rl->window_start_ms = now_ms;
		rl->used = 0;
	}
	if (rl->used >= rl->burst) {
		rl->suppressed++;
		return false;
	}
	rl->used++;
	*ret_suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}

void log_ratelimited(struct log_ratelimit *rl, int priority, const char *fmt, ...)
{
	char line[1024];
	unsigned suppressed;
	va_list ap;

	if (priority > log_max_priority ||
	    !log_ratelimit_allow(rl, clock_monotonic_ms(), &suppressed))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (suppressed)
		log_msg(priority, "%s (%u similar message%s suppressed)", line, suppressed,
			suppressed == 1 ? "" : "s");
	else
		log_msg(priority, "%s", line);
}
