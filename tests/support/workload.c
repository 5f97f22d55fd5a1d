/* Test workloads with exactly known kernel activity. Nothing else runs in
 * the process between start and exit that the tests count.
 *
 *   workload getppid N        N getppid() calls
 *   workload badclose N       N close(-1) calls (EBADF)
 *   workload sleep N USEC     N nanosleeps (voluntary context switches)
 *   workload send HOST PORT BYTES   connect and send exactly BYTES
 *   workload recv PORT BYTES  accept one connection (any address), receive BYTES, print "ready" first
 *   workload hog MB           touch MB of anonymous memory (OOM in a small memcg)
 *   workload fault FILE       mmap FILE, drop it from the page cache, touch every page
 *   workload fork N           N fork()+exit children
 *   workload exec N           N fork()+execve(/bin/true)
 *   workload write FILE MB SYNC   write MB MiB of data to FILE (new), fsync it when SYNC is 1
 *   workload read FILE        drop FILE from the page cache, then read it all
 *   workload hold MB          touch MB MiB of anonymous memory, print "ready", keep it until stdin closes
 *   workload refused HOST PORT N  N connects to a port nobody listens on (each must be refused)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];

static int do_send(const char *host, int port, long total)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("connect"); return 1; }
    memset(buf, 'x', sizeof(buf));
    long sent = 0;
    while (sent < total) {
        long chunk = total - sent < (long)sizeof(buf) ? total - sent : (long)sizeof(buf);
        ssize_t n = send(fd, buf, chunk, 0);
        if (n < 0) { perror("send"); return 1; }
        sent += n;
    }
    shutdown(fd, SHUT_WR);
    while (recv(fd, buf, sizeof(buf), 0) > 0) {}
    close(fd);
    return 0;
}

static int do_recv(int port, long total)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_ANY); /* pods in their own netns connect by address */
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("bind"); return 1; }
    listen(lfd, 1);
    printf("ready\n");
    fflush(stdout);
    int fd = accept(lfd, NULL, NULL);
    long got = 0;
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
        got += n;
    close(fd);
    close(lfd);
    printf("%ld\n", got);
    return got == total ? 0 : 2;
}

static int do_write(const char *path, long mb, int sync)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    memset(buf, 'w', sizeof(buf));
    for (long done = 0; done < mb << 20; done += sizeof(buf))
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) { perror("write"); return 1; }
    if (sync && fsync(fd) < 0) { perror("fsync"); return 1; }
    return close(fd);
}

static int do_read(const char *path)
{
    /* O_NOATIME: the first read after a write would update atime, and
     * writing the inode back can dirty a metadata page in this cgroup when
     * writeback already cleaned it (seen under load): a read dirties nothing. */
    int fd = open(path, O_RDONLY | O_NOATIME);
    if (fd < 0) { perror("open"); return 1; }
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        total += n;
    close(fd);
    printf("%ld\n", total);
    return n < 0;
}

static int do_refused(const char *host, int port, long n)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 || errno != ECONNREFUSED) {
            fprintf(stderr, "connect %ld was not refused\n", i);
            return 1;
        }
        close(fd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 64;
    const char *mode = argv[1];
    if (!strcmp(mode, "getppid")) {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
    } else if (!strcmp(mode, "badclose")) {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) syscall(SYS_close, -1);
    } else if (!strcmp(mode, "sleep")) {
        long n = atol(argv[2]), usec = atol(argv[3]);
        struct timespec ts = {.tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000};
        for (long i = 0; i < n; i++) nanosleep(&ts, NULL);
    } else if (!strcmp(mode, "send")) {
        return do_send(argv[2], atoi(argv[3]), atol(argv[4]));
    } else if (!strcmp(mode, "recv")) {
        return do_recv(atoi(argv[2]), atol(argv[3]));
    } else if (!strcmp(mode, "hog")) {
        long mb = atol(argv[2]);
        for (long i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return 3;
            memset(p, 1, 1 << 20);
        }
    } else if (!strcmp(mode, "fault")) {
        int fd = open(argv[2], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) { perror("open"); return 1; }
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        char *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        madvise(p, st.st_size, MADV_RANDOM);
        volatile char sum = 0;
        for (off_t off = 0; off < st.st_size; off += 4096) sum += p[off];
        printf("%d\n", (int)sum);
    } else if (!strcmp(mode, "fork") || !strcmp(mode, "exec")) {
        long n = atol(argv[2]);
        int do_exec = !strcmp(mode, "exec");
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                if (do_exec) {
                    char *args[] = {"/bin/true", NULL};
                    execv("/bin/true", args);
                }
                _exit(0);
            }
            waitpid(pid, NULL, 0);
        }
    } else if (!strcmp(mode, "write")) {
        return do_write(argv[2], atol(argv[3]), atoi(argv[4]));
    } else if (!strcmp(mode, "read")) {
        return do_read(argv[2]);
    } else if (!strcmp(mode, "hold")) {
        long mb = atol(argv[2]);
        /* volatile: the compiler may not drop memory that is never read */
        volatile char *p = malloc(mb << 20);
        if (!p) return 3;
        for (long off = 0; off < mb << 20; off += 4096)
            p[off] = 1;
        printf("ready\n");
        fflush(stdout);
        while (read(0, buf, sizeof(buf)) > 0) {}
        free((void *)p);
    } else if (!strcmp(mode, "refused")) {
        return do_refused(argv[2], atoi(argv[3]), atol(argv[4]));
    } else {
        return 64;
    }
    return 0;
}
