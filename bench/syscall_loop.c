/* Times N calls of one syscall: prints nanoseconds per call.
 *   syscall_loop NR N ROUNDS    -> median ns/call over ROUNDS rounds */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long nr = atol(argv[1]), n = atol(argv[2]);
    int rounds = atoi(argv[3]);
    double results[64];
    if (rounds > 64) rounds = 64;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) syscall(nr);
        results[r] = (now_ns() - t0) / n;
    }
    qsort(results, rounds, sizeof(double), cmp);
    printf("%.1f\n", results[rounds / 2]);
    return 0;
}
