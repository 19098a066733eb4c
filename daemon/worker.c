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
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct worker_job *queue, **queue_tail; /* waiting to run */
	struct worker_job *done, **done_tail;	/* finished, waiting for the loop */
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

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct worker_job *j;
		while (!(j = pop(&w->queue, &w->queue_tail)) && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!j)
			break;
		pthread_mutex_unlock(&w->lock);
		j->result = j->run(j->arg);
		pthread_mutex_lock(&w->lock);
		push(&w->done_tail, j);
		uint64_t one = 1;
		(void)!write(w->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
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

int worker_new(struct event_base *base, struct worker **ret_worker)
{
	struct worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->queue_tail = &w->queue;
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
	r = -pthread_create(&w->thread, NULL, worker_main, w);
	if (r < 0)
		goto fail;
	*ret_worker = w;
	return 0;
fail:
	if (w->ev)
		event_free(w->ev);
	closep(&w->efd);
	free(w);
	return r;
}

void worker_submit(struct worker *w, struct worker_job *job)
{
	pthread_mutex_lock(&w->lock);
	push(&w->queue_tail, job);
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void worker_free(struct worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	worker_reap(w);
	event_free(w->ev);
	close(w->efd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}
