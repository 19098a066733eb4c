/* Unit tests for daemon/server.c on a real socket and event loop, without the rest of the
 * daemon: what accepting does when the process is out of fds. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "server.h"

static void *on_accepted(void *ctx, struct conn *c)
{
	(*(int *)ctx)++;
	return ctx;
}

static void on_request(void *ctx, void *data, const P2pbuf__Request *req)
{
}

static void on_closed(void *ctx, void *data)
{
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* opendir's own */
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Turn the loop for ms milliseconds. */
static void run_for(struct event_base *base, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static int count_lines(const char *path, const char *needle)
{
	char line[1024];
	int n = 0;
	FILE *f = fopen(path, "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* Out of fds, accept fails at once for as long as none are freed: the server must stop
 * listening (no spinning loop, one log line for the episode), retry from its timer, and take
 * the waiting connection once fds are back. */
START_TEST(accept_pauses_while_out_of_fds)
{
	char dir[] = "/tmp/p2pbuf-server-XXXXXX", path[64], logpath[80];
	struct server *s = NULL;
	int accepted = 0, go[2], hogs[256], n_hogs = 0;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	/* The server's log lines go to a file we read afterwards. */
	int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(logfd, 0);
	int saved_stderr = dup(STDERR_FILENO);
	dup2(logfd, STDERR_FILENO);
	close(logfd);

	struct event_base *base = event_base_new();
	const struct server_options opt = { .socket_path = path,
					    .max_clients = 4,
					    .socket_group = (gid_t)-1,
					    .socket_mode = 0600 };
	const struct server_callbacks cb = { on_accepted, on_request, on_closed, &accepted };
	ck_assert_int_eq(server_new(base, &opt, &cb, &s), 0);
	ck_assert_int_eq(pipe(go), 0);

	/* Use up every fd the soft limit allows. */
	struct rlimit old, low;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = (struct rlimit){ (rlim_t)open_fds() + 16, old.rlim_max };
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (n_hogs < 256 && (hogs[n_hogs] = dup(0)) >= 0)
		n_hogs++;
	ck_assert_int_eq(errno, EMFILE);

	/* A client elsewhere connects: it waits in the backlog, and accept gets EMFILE. */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		char b;
		close(hogs[0]);
		int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		memcpy(sa.sun_path, path, strlen(path) + 1);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			_exit(1);
		close(go[1]);
		_exit(read(go[0], &b, 1) < 0 ? 2 : 0); /* hold the connection until told */
	}
	double cpu0 = cpu_seconds();
	run_for(base, 600);
	double cpu = cpu_seconds() - cpu0;
	ck_assert(server_accept_paused(s));
	ck_assert_int_eq(accepted, 0);
	/* A spinning loop burns the whole 600 ms; paused, it wakes 3 times. */
	ck_assert_msg(cpu < 0.15, "the loop spun: %.3f s of CPU in 0.6 s", cpu);

	/* fds come back: the next retry accepts the waiting client. */
	while (n_hogs > 0)
		close(hogs[--n_hogs]);
	for (int t = 0; t < 50 && accepted == 0; t++)
		run_for(base, 50);
	ck_assert_int_eq(accepted, 1);
	ck_assert(!server_accept_paused(s));
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

	close(go[1]);
	waitpid(pid, NULL, 0);
	close(go[0]);
	server_free(s);
	event_base_free(base);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	/* One line when the episode began, one when it ended; none per failed accept. */
	ck_assert_int_eq(count_lines(logpath, "not accepting connections"), 1);
	ck_assert_int_eq(count_lines(logpath, "accepting connections again"), 1);
	unlink(logpath);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("server");
	TCase *tc = tcase_create("accept");

	tcase_add_test(tc, accept_pauses_while_out_of_fds);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
