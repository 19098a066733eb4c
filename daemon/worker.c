#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "macro.h"
#include "worker.h"

struct worker {
	pthread_t threads[WORKER_MAX_THREADS];
	unsigned n_threads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct worker_lane own;			 /* worker_submit()'s */
	struct worker_lane *ready, **ready_tail; /* lanes with jobs and no thread yet */
	struct worker_job *done, **done_tail;	 /* finished, waiting for the loop */
	bool stop;
	int efd;
	struct event *ev;
};

static struct worker_job *pop(struct worker_job **head, struct worker_job ***tail)
{
	struct worker_job *j = *head;

	if (j) {
		*head = j->next;
		if (!*head)
			*tail = head;
		j->next = NULL;
	}
	return j;
}

static void push(struct worker_job ***tail, struct worker_job *j)
{
	j->next = NULL;
	**tail = j;
	*tail = &j->next;
}

static struct worker_lane *pop_lane(struct worker *w)
{
	struct worker_lane *l = w->ready;

	if (l) {
		w->ready = l->next;
		if (!w->ready)
			w->ready_tail = &w->ready;
		l->next = NULL;
	}
	return l;
}

/* Under the lock: run lane's jobs until it has none left. Its last job's completion and
 * letting go of the lane happen under one hold of the lock, so that once the loop has seen
 * that job done, no thread touches the lane any more (its owner may free it). */
static void run_lane(struct worker *w, struct worker_lane *lane)
{
	struct worker_job *j;

	while ((j = pop(&lane->queue, &lane->queue_tail))) {
		pthread_mutex_unlock(&w->lock);
		j->result = j->run(j->arg);
		pthread_mutex_lock(&w->lock);
		push(&w->done_tail, j);
		uint64_t one = 1;
		(void)!write(w->efd, &one, sizeof(one));
	}
	lane->taken = false;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct worker_lane *lane;
		while (!(lane = pop_lane(w)) && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!lane)
			break;
		run_lane(w, lane);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

void worker_lane_init(struct worker_lane *lane)
{
	*lane = (struct worker_lane){ .queue_tail = &lane->queue };
}

/* Loop thread: run done() for every finished job. */
static void worker_reap(struct worker *w)
{
	for (;;) {
		pthread_mutex_lock(&w->lock);
		struct worker_job *j = pop(&w->done, &w->done_tail);
		pthread_mutex_unlock(&w->lock);
		if (!j)
			return;
		j->done(j->arg, j->result);
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)!read(fd, &n, sizeof(n));
	worker_reap(arg);
}

/* Stop the threads started so far: each finishes the jobs queued. */
static void stop_threads(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->n_threads; i++)
		pthread_join(w->threads[i], NULL);
	w->n_threads = 0;
}

static int start_threads(struct worker *w, unsigned n)
{
	for (; w->n_threads < n; w->n_threads++) {
		int r = pthread_create(&w->threads[w->n_threads], NULL, worker_main, w);
		if (r > 0)
			return -r;
	}
	return 0;
}

int worker_new_pool(struct event_base *base, unsigned n_threads, struct worker **ret_worker)
{
	struct worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	worker_lane_init(&w->own);
	w->ready_tail = &w->ready;
	w->done_tail = &w->done;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->efd < 0) {
		r = -errno;
		goto fail;
	}
	w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_done, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	n_threads = n_threads < 1 ? 1 : n_threads;
	r = start_threads(w, n_threads < WORKER_MAX_THREADS ? n_threads : WORKER_MAX_THREADS);
	if (r < 0)
		goto fail;
	*ret_worker = w;
	return 0;
fail:
	stop_threads(w); /* nothing was queued yet */
	if (w->ev)
		event_free(w->ev);
	closep(&w->efd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	return r;
}

int worker_new(struct event_base *base, struct worker **ret_worker)
{
	return worker_new_pool(base, 1, ret_worker);
}

void worker_submit_lane(struct worker *w, struct worker_lane *lane, struct worker_job *job)
{
	pthread_mutex_lock(&w->lock);
	push(&lane->queue_tail, job);
	if (!lane->taken) {
		/* Not yet waiting nor running: a free thread takes it. */
		lane->taken = true;
		lane->next = NULL;
		*w->ready_tail = lane;
		w->ready_tail = &lane->next;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
}

void worker_submit(struct worker *w, struct worker_job *job)
{
	worker_submit_lane(w, &w->own, job);
}

void worker_free(struct worker *w)
{
	if (!w)
		return;
	stop_threads(w);
	worker_reap(w);
	event_free(w->ev);
	close(w->efd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}
