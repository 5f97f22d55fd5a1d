/* One TCP connection over loopback, both ends in this process: each round
 * trip is send + recv on either side (1 byte each way). Prints the CPU time
 * of the process per round trip in ns (loopback delivery runs in its context).
 *   tcp_pingpong ROUNDS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 100000;
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) || listen(listener, 1) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&addr, sizeof(addr))) {
        perror("connect");
        return 1;
    }
    int server = accept(listener, NULL, NULL);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char byte = 'x';
    double start = now_ns();
    for (long i = 0; i < rounds; i++) {
        if (send(client, &byte, 1, 0) != 1 || recv(server, &byte, 1, 0) != 1 ||
            send(server, &byte, 1, 0) != 1 || recv(client, &byte, 1, 0) != 1) {
            perror("pingpong");
            return 1;
        }
    }
    printf("%.1f\n", (now_ns() - start) / rounds);
    return 0;
}
