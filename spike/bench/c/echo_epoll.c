/*
 * The machine's floor for many concurrent connections: a single-threaded,
 * non-blocking TCP echo server in C on Linux epoll. It sends back every byte
 * it reads, with no framing and no parsing. When a peer reads slower than it
 * writes, the unsent bytes wait in a per-connection buffer and the server
 * stops reading from that peer until they are gone, so memory stays bounded.
 *
 * Built and started by `python -m spike.bench` on Linux only; prints
 * "Serving on 127.0.0.1:PORT" once it is listening. Usage: echo_epoll [PORT]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    size_t off, len; /* bytes of buf still to send: buf[off..len) */
    char buf[BUF_SIZE];
};

static int epfd;

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
}

static void watch(struct conn *c, int op, unsigned events)
{
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(epfd, op, c->fd, &ev);
}

static void drop(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Sends what is pending; returns -1 on a dead peer, else bytes still pending. */
static long flush_pending(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->off += (size_t)w;
    }
    return (long)(c->len - c->off);
}

static void on_ready(struct conn *c, unsigned events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        drop(c);
        return;
    }
    if (c->off < c->len) { /* writable again: finish the old reply first */
        long left = flush_pending(c);
        if (left < 0) {
            drop(c);
            return;
        }
        if (left > 0)
            return;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    }
    for (;;) {
        ssize_t n = read(c->fd, c->buf, BUF_SIZE);
        if (n == 0) {
            drop(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            drop(c);
            return;
        }
        c->off = 0;
        c->len = (size_t)n;
        long left = flush_pending(c);
        if (left < 0) {
            drop(c);
            return;
        }
        if (left > 0) { /* peer is slow: wait for room, read nothing more */
            watch(c, EPOLL_CTL_MOD, EPOLLOUT);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int one = 1;
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    struct epoll_event events[MAX_EVENTS];
    static int listener_tag; /* its address marks the listening socket */

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
    set_nonblocking(lfd);
    getsockname(lfd, (struct sockaddr *)&addr, &len);

    epfd = epoll_create1(0);
    struct epoll_event lev;
    lev.events = EPOLLIN;
    lev.data.ptr = &listener_tag;
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);

    printf("Serving on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr != &listener_tag) {
                on_ready(events[i].data.ptr, events[i].events);
                continue;
            }
            for (;;) { /* accept everything that is waiting */
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0)
                    break;
                struct conn *c = malloc(sizeof *c);
                if (c == NULL) {
                    close(fd);
                    continue;
                }
                set_nonblocking(fd);
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c->fd = fd;
                c->off = c->len = 0;
                watch(c, EPOLL_CTL_ADD, EPOLLIN);
            }
        }
    }
}
