/* A worker thread: runs slow work off the event loop and hands each result back to the loop
 * thread. The registry's runs blocking device operations (close, reset, reopen: the kernel
 * may wait for importers with no timeout); the revocation engine has one of its own for
 * holder counts, so that a count never waits behind a device's close. Jobs run one at a
 * time, in submission order. */
#pragma once

#include <event2/event.h>

struct worker;

struct worker_job {
	/* Runs on the worker thread; returns a result for done(). */
	int (*run)(void *arg);
	/* Runs on the loop thread with run()'s result. */
	void (*done)(void *arg, int result);
	void *arg;
	/* Private to the worker. */
	int result;
	struct worker_job *next;
};

/* Start the thread and register its completion eventfd with base. */
int worker_new(struct event_base *base, struct worker **ret_worker);

/* Queue job (owned by the caller until done() runs; it must stay valid until then). */
void worker_submit(struct worker *w, struct worker_job *job);

/* Wait for queued jobs to finish, run their done() callbacks, stop the thread, free. */
void worker_free(struct worker *w);
