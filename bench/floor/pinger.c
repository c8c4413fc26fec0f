/* bench/floor.py's pinger: COUNT 84-byte datagrams to PORT on loopback, GAP_US apart, each
 * waiting for its answer (1 s at most); prints each round trip in microseconds, or "lost". */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pinger PORT COUNT GAP_US\n");
        return 2;
    }
    int count = atoi(argv[2]), gap = atoi(argv[3]);
    if (count < 1 || count > 100000 || gap < 0 || gap > 1000000) {
        fprintf(stderr, "pinger: COUNT 1..100000, GAP_US 0..1000000\n");
        return 2;
    }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval limit = {1, 0};
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) < 0) {
        perror("pinger");
        return 1;
    }
    char buf[128] = {0};
    for (int i = 0; i < count; i++) {
        usleep((useconds_t)gap);
        double t = now_us();
        if (send(s, buf, 84, 0) != 84 || recv(s, buf, sizeof buf, 0) != 84)
            printf("lost\n");
        else
            printf("%.1f\n", now_us() - t);
    }
    return 0;
}
