/*
 * What one event costs the kernel at N subscribers, without a proxy (issue 15.5): the floor
 * under sse-edge's fan-out latency. One process holds N loopback TCP connections and writes
 * one event to each, ROUNDS times; a second process holds the other ends and reads them with
 * epoll (or does not read at all, so that no reader is ever woken: "quiet").
 *
 * Printed per write: CPU (user + system, getrusage) and wall time of the writer, for
 *  - writev of the fast path's three slices (chunk-size line, frame, CRLF),
 *  - write of the same bytes as one buffer,
 *  - an empty system call (getppid), which is what a batched submission (io_uring) would save
 *    per socket at most: the TCP send itself stays one per socket.
 * and the wall time of one round, the time the last of N subscribers waits for an event
 * when one core writes them all.
 *
 *   cc -O2 -o /tmp/writev_cost benches/writev_cost.c
 *   /tmp/writev_cost [N=10000] [ROUNDS=20] [FRAME_BYTES=150]   (port 19200 + PORT_SHIFT)
 *
 * Loopback only; the reader exits when the writer closes its ends (or after 120 s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* The other ends: connect n sockets, then read everything (epoll) or nothing until EOF. */
static void reader(int port, int n, int quiet) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ep = epoll_create1(0);
  int *fds = calloc(n, sizeof(int));
  for (int i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
    if (!quiet) epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  alarm(120);
  if (quiet) { /* wait for the writer to close the first connection */
    char c;
    while (read(fds[0], &c, 1) > 0) {}
    _exit(0);
  }
  int open = n;
  struct epoll_event events[256];
  char buf[65536];
  while (open > 0) {
    int k = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < k; i++) {
      ssize_t r = read(events[i].data.fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EAGAIN)) {
        close(events[i].data.fd);
        open--;
      }
    }
  }
  _exit(0);
}

/* Accepts n connections on a fresh reader process; returns their fds. */
static int *connect_pairs(int port, int n, int quiet, pid_t *child) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(l, 4096) < 0) die("listen");
  *child = fork();
  if (*child == 0) reader(port, n, quiet);
  int *fds = calloc(n, sizeof(int));
  for (int i = 0; i < n; i++) {
    fds[i] = accept(l, NULL, NULL);
    if (fds[i] < 0) die("accept");
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  close(l);
  return fds;
}

static void run(const char *label, int port, int n, int rounds, int frame_bytes, int quiet, int how) {
  pid_t child;
  int *fds = connect_pairs(port, n, quiet, &child);
  char *frame = malloc(frame_bytes), size[16], whole[4096];
  memset(frame, 'x', frame_bytes);
  int size_len = snprintf(size, sizeof size, "%x\r\n", frame_bytes);
  int whole_len = snprintf(whole, sizeof whole, "%s%.*s\r\n", size, frame_bytes, frame);
  struct iovec iov[3] = {{size, size_len}, {frame, frame_bytes}, {"\r\n", 2}};
  double worst = 0, c0 = cpu(), t0 = now();
  for (int r = 0; r < rounds; r++) {
    double start = now();
    for (int i = 0; i < n; i++) {
      ssize_t w = how == 0 ? writev(fds[i], iov, 3)
                : how == 1 ? write(fds[i], whole, whole_len)
                           : syscall(SYS_getppid);
      if (w < 0) die("write");
    }
    double took = now() - start;
    if (took > worst) worst = took;
  }
  double calls = (double)n * rounds, c = cpu() - c0, t = now() - t0;
  printf("%-34s %6.2f us CPU, %6.2f us wall per call; one round of %d: %6.1f ms mean, %6.1f ms worst\n",
         label, c / calls * 1e6, t / calls * 1e6, n, t / rounds * 1e3, worst * 1e3);
  for (int i = 0; i < n; i++) close(fds[i]);
  waitpid(child, NULL, 0);
  free(fds);
  free(frame);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 10000;
  int rounds = argc > 2 ? atoi(argv[2]) : 20;
  int frame_bytes = argc > 3 ? atoi(argv[3]) : 150;
  const char *shift = getenv("PORT_SHIFT");
  int port = 19200 + (shift ? atoi(shift) : 100);
  if (n < 1 || rounds < 1 || frame_bytes < 1 || frame_bytes > 4000) {
    fprintf(stderr, "usage: writev_cost [N] [ROUNDS] [FRAME_BYTES <= 4000]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0); /* nothing buffered is copied into the reader by fork */
  printf("%d connections, %d rounds, %d-byte frames; each measure twice, alternating\n", n, rounds,
         frame_bytes);
  for (int pass = 0; pass < 2; pass++) {
    run("writev of 3 slices, reader woken", port, n, rounds, frame_bytes, 0, 0);
    run("write of 1 buffer, reader woken", port, n, rounds, frame_bytes, 0, 1);
    run("writev of 3 slices, quiet reader", port, n, rounds, frame_bytes, 1, 0);
    run("write of 1 buffer, quiet reader", port, n, rounds, frame_bytes, 1, 1);
    run("empty system call (getppid)", port, n, rounds, frame_bytes, 1, 2);
  }
  return 0;
}
