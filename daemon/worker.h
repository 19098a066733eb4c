/* A worker: threads that run slow work off the event loop and hand each result back to the
 * loop thread. Jobs are queued on lanes: the jobs of one lane run one at a time, in
 * submission order; different lanes run at the same time, each on a thread of its own, as
 * long as there are threads free. The registry gives each device a lane, so that a close the
 * kernel holds up (it may wait for importers with no timeout) delays that device alone; the
 * revocation engine has a one-thread worker of its own for holder counts, so that a count
 * never waits behind a device's close. The threads are all started by worker_new, before the
 * sandbox (which forbids starting threads) is in place. */
#pragma once

#include <stdbool.h>

#include <event2/event.h>

struct worker;

struct worker_job {
	/* Runs on a worker thread; returns a result for done(). */
	int (*run)(void *arg);
	/* Runs on the loop thread with run()'s result. */
	void (*done)(void *arg, int result);
	void *arg;
	/* Private to the worker. */
	int result;
	struct worker_job *next;
};

/* A queue of jobs that run in order. Its fields are the worker's (under its lock). */
struct worker_lane {
	struct worker_job *queue, **queue_tail;
	bool taken;		  /* a thread runs its jobs, or it waits for one */
	struct worker_lane *next; /* in the worker's list of lanes waiting for a thread */
};

/* The most threads one worker starts: devices beyond it share threads when more than this
 * many are busy at once. */
#define WORKER_MAX_THREADS 64

/* Start one thread and register the completion eventfd with base. */
int worker_new(struct event_base *base, struct worker **ret_worker);
/* Start n_threads threads (clamped to 1..WORKER_MAX_THREADS): up to that many lanes run at
 * once. */
int worker_new_pool(struct event_base *base, unsigned n_threads, struct worker **ret_worker);

/* Make lane empty (before its first job). */
void worker_lane_init(struct worker_lane *lane);

/* Queue job on the worker's own lane (owned by the caller until done() runs; it must stay
 * valid until then). */
void worker_submit(struct worker *w, struct worker_job *job);
/* Queue job on lane, after the lane's earlier jobs; lane must stay valid until the done() of
 * its last job has run. */
void worker_submit_lane(struct worker *w, struct worker_lane *lane, struct worker_job *job);

/* Wait for every queued job to finish (a job the kernel holds up is waited for), run their
 * done() callbacks, stop the threads, free. */
void worker_free(struct worker *w);
