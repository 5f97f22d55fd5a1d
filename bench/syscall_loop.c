/* Times calls of one syscall in CPU time of the calling thread (time spent
 * preempted by other work on a shared machine is not counted; BPF programs
 * run in the caller's context and are).
 *   syscall_loop NR N ROUNDS   -> median ns/call over ROUNDS rounds
 *   syscall_loop serve         -> reads "NR N" lines, answers ns/call for each:
 *                                 one process for many short samples */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double per_call(long nr, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) syscall(nr);
    return (now_ns() - t0) / n;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "serve")) {
        long nr, n;
        while (scanf("%ld %ld", &nr, &n) == 2) {
            printf("%.2f\n", per_call(nr, n));
            fflush(stdout);
        }
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: syscall_loop NR N ROUNDS | syscall_loop serve\n");
        return 2;
    }
    long nr = atol(argv[1]), n = atol(argv[2]);
    int rounds = atoi(argv[3]);
    double results[64];
    if (rounds > 64) rounds = 64;
    if (rounds < 1) rounds = 1;
    for (int r = 0; r < rounds; r++)
        results[r] = per_call(nr, n);
    qsort(results, rounds, sizeof(double), cmp);
    printf("%.1f\n", results[rounds / 2]);
    return 0;
}
