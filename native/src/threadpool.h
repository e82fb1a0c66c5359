/* A persistent thread pool: workers are created once and spin briefly, then sleep, between
 * jobs, so a parallel call costs well under a microsecond to start (a fork/join per call
 * would cost 1-2 us). The calling thread takes part as thread 0. */
#ifndef DSV3_THREADPOOL_H
#define DSV3_THREADPOOL_H
typedef void (*dsv3_task_fn)(void* ctx, int task, int thread);
/* Runs fn(ctx, t, thread) for t in [0, n_tasks) on the pool and returns when all are done.
 * Tasks are claimed dynamically; `thread` is in [0, dsv3_threads()). Not re-entrant: a task
 * must not call dsv3_parallel_for (nested calls run inline on the calling thread). */
void dsv3_parallel_for(int n_tasks, dsv3_task_fn fn, void* ctx);
int dsv3_threads(void);
/* 1 when called from inside a dsv3_parallel_for task (any thread): a parallel call made now
 * would run inline on this thread, so callers can plan for one thread. */
int dsv3_in_task(void);
/* Sets the number of threads used from now on (1..cores*4); default: DSV3_THREADS or the
 * number of online cores. */
void dsv3_set_threads(int n);
/* Sets how long an idle worker spins (PAUSE iterations) before it sleeps; returns the previous
 * value. Process-wide; DSV3_POOL_SPIN sets the start-up value. */
int dsv3_set_pool_spin(int iters);
#endif
