/* The C baseline of bench/floor.py: a UDP relay on loopback, one epoll loop.
 * relay PORT_IN PORT_OUT PORT_ECHO: datagrams from the pinger (to PORT_IN) go to the echo
 * server (from PORT_OUT), and the echo's answers back to the pinger. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int bound(int port) {
    struct sockaddr_in a = loopback(port);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("relay: bind");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: relay PORT_IN PORT_OUT PORT_ECHO\n");
        return 2;
    }
    int in = bound(atoi(argv[1])), out = bound(atoi(argv[2]));
    struct sockaddr_in echo = loopback(atoi(argv[3])), pinger = {0};
    socklen_t plen = sizeof pinger;
    if (connect(out, (struct sockaddr *)&echo, sizeof echo) < 0) {
        perror("relay: connect");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = in;
    epoll_ctl(ep, EPOLL_CTL_ADD, in, &ev);
    ev.data.fd = out;
    epoll_ctl(ep, EPOLL_CTL_ADD, out, &ev);
    printf("ready\n");
    fflush(stdout);
    char buf[2048];
    for (;;) {
        struct epoll_event evs[2];
        int n = epoll_wait(ep, evs, 2, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == in) {
                plen = sizeof pinger;
                ssize_t r = recvfrom(in, buf, sizeof buf, 0, (struct sockaddr *)&pinger, &plen);
                if (r > 0)
                    send(out, buf, (size_t)r, 0);
            } else {
                ssize_t r = recv(out, buf, sizeof buf, 0);
                if (r > 0 && plen)
                    sendto(in, buf, (size_t)r, 0, (struct sockaddr *)&pinger, plen);
            }
        }
    }
}
