/*
 * The machine's floor for one request/response round trip: a blocking TCP
 * echo server in C with one thread per connection. It sends back every byte
 * it reads, with no framing and no parsing, so its round trip is the cost of
 * the kernel's loopback path plus two context switches and nothing else.
 *
 * Built and started by `python -m spike.bench`; prints
 * "Serving on 127.0.0.1:PORT" once it is listening. Usage: echo_blocking [PORT]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *serve_one(void *arg)
{
    int fd = (int)(long)arg;
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        /* write() may take only part of a large reply: keep going. */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto done;
            off += w;
        }
    }
done:
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int one = 1;
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;

    /* A client that vanishes mid-write must not kill the server. */
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) {
        perror("socket");
        return 1;
    }
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    printf("Serving on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        /* Replies are small and immediate: never let Nagle hold them back. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t tid;
        if (pthread_create(&tid, NULL, serve_one, (void *)(long)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(tid);
    }
}
