/* bench/floor.py's echo server: every datagram to PORT on loopback goes back to its sender. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: echo PORT\n");
        return 2;
    }
    struct sockaddr_in a = {0}, peer;
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("echo: bind");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[2048];
    for (;;) {
        socklen_t len = sizeof peer;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (r > 0)
            sendto(s, buf, (size_t)r, 0, (struct sockaddr *)&peer, len);
    }
}
