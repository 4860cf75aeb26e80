// A tiny BAR prober for tests/tools/podman_views_test.sh, built by the test
// with `cc -static` and bind-mounted read-only into a container image that
// has no compiler and no libraries of its own. Plain C, no dependencies.
//
//   bar_probe hold DIR FILE   opens FILE (a resourceN) read-write, which
//                             claims the device's IOMMU group, maps its first
//                             page MAP_SHARED and reads through both; reports
//                             DIR/held and DIR/ready, then waits for DIR/go.
//                             After go: a pread on the same fd (DIR/pread),
//                             then, last, a touch of the same mapping in a
//                             child process (DIR/map: SIGBUS when the child
//                             died of it). Then DIR/done.
//   bar_probe try FILE        opens FILE read-write (a claim) and preads it;
//                             prints "ok VALUE" (exit 0) or the errno's name
//                             (exit 1). The claim ends when it exits.
//   bar_probe idle DIR NAME   waits until DIR/NAME exists: a container's
//                             long-running process, for `podman exec`.
//
// Every wait is bounded (WAIT_S seconds); a wait that runs out exits 3. Each
// report is one line, written to NAME.tmp and renamed, so the test never
// reads half a line; it is printed on stdout too (for `podman logs`).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WAIT_S = 300, PAGE = 4096 };

static const char* err_name(int e) {
  switch (e) {
    case ENODEV: return "ENODEV";
    case EBUSY: return "EBUSY";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EIO: return "EIO";
    case ENOENT: return "ENOENT";
    case ENXIO: return "ENXIO";
    case ENOTCONN: return "ENOTCONN";
    case EINVAL: return "EINVAL";
    case EROFS: return "EROFS";
    case EAGAIN: return "EAGAIN";
    default: {
      static char buf[32];
      snprintf(buf, sizeof buf, "errno %d", e);
      return buf;
    }
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void nap(void) {
  struct timespec t = {0, 20 * 1000 * 1000};
  nanosleep(&t, NULL);
}

// DIR/NAME := LINE "\n", atomically; and on stdout.
static void report(const char* dir, const char* name, const char* line) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE* f = fopen(tmp, "w");
  if (f == NULL || fprintf(f, "%s\n", line) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "bar_probe: cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  printf("%s: %s\n", name, line);
  fflush(stdout);
}

// Waits until DIR/NAME exists; exits 3 after WAIT_S seconds.
static void wait_for(const char* dir, const char* name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  const double end = now_s() + WAIT_S;
  while (access(path, F_OK) != 0) {
    if (now_s() > end) {
      fprintf(stderr, "bar_probe: %s did not appear within %d s\n", path, WAIT_S);
      exit(3);
    }
    nap();
  }
}

// Reads the mapping's first dword in a child: "ok VALUE", "SIGBUS", ...
static void touch_in_child(volatile uint32_t* map, char* out, size_t size) {
  int fds[2];
  if (pipe(fds) != 0) {
    snprintf(out, size, "pipe: %s", err_name(errno));
    return;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    snprintf(out, size, "fork: %s", err_name(errno));
    return;
  }
  if (pid == 0) {
    close(fds[0]);
    signal(SIGBUS, SIG_DFL);
    const uint32_t v = map[0];
    char buf[32];
    const int n = snprintf(buf, sizeof buf, "%08x", v);
    if (write(fds[1], buf, (size_t)n) != n) _exit(4);
    _exit(0);
  }
  close(fds[1]);
  const double end = now_s() + WAIT_S;
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid, &status, WNOHANG)) == 0) {
    if (now_s() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      snprintf(out, size, "hang (killed after %d s)", WAIT_S);
      close(fds[0]);
      return;
    }
    nap();
  }
  if (r < 0) {
    snprintf(out, size, "waitpid: %s", err_name(errno));
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGBUS) {
      snprintf(out, size, "SIGBUS");
    } else {
      snprintf(out, size, "signal %d", sig);
    }
  } else {
    char buf[32] = {0};
    const ssize_t n = read(fds[0], buf, sizeof buf - 1);
    snprintf(out, size, "ok %s (exit %d)", n > 0 ? buf : "?", WEXITSTATUS(status));
  }
  close(fds[0]);
}

static void pread_word(int fd, char* out, size_t size) {
  uint32_t v = 0;
  const ssize_t n = pread(fd, &v, sizeof v, 0);
  if (n == (ssize_t)sizeof v) {
    snprintf(out, size, "ok %08x", v);
  } else if (n < 0) {
    snprintf(out, size, "%s", err_name(errno));
  } else {
    snprintf(out, size, "short read %zd", n);
  }
}

static int hold(const char* dir, const char* file) {
  char line[512], a[128], b[128];
  const int fd = open(file, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    snprintf(line, sizeof line, "open %s", err_name(errno));
    report(dir, "held", line);
    report(dir, "ready", "failed");
    return 1;
  }
  void* p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    snprintf(line, sizeof line, "open ok, mmap %s", err_name(errno));
    report(dir, "held", line);
    report(dir, "ready", "failed");
    return 1;
  }
  volatile uint32_t* map = p;
  pread_word(fd, a, sizeof a);
  snprintf(b, sizeof b, "%08x", map[0]);  // the claim holder's own touch: no fault
  snprintf(line, sizeof line, "open ok, pread %s, mapping %s", a, b);
  report(dir, "held", line);
  report(dir, "ready", "ok");

  wait_for(dir, "go");
  pread_word(fd, a, sizeof a);
  report(dir, "pread", a);
  touch_in_child(map, b, sizeof b);  // last: after this the mapping is dead
  report(dir, "map", b);
  report(dir, "done", "ok");
  return 0;
}

static int try_claim(const char* file) {
  char a[128];
  const int fd = open(file, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    printf("%s\n", err_name(errno));
    return 1;
  }
  pread_word(fd, a, sizeof a);
  printf("%s\n", a);
  close(fd);
  return strncmp(a, "ok", 2) == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && strcmp(argv[1], "hold") == 0) return hold(argv[2], argv[3]);
  if (argc == 3 && strcmp(argv[1], "try") == 0) return try_claim(argv[2]);
  if (argc == 4 && strcmp(argv[1], "idle") == 0) {
    wait_for(argv[2], argv[3]);
    return 0;
  }
  fprintf(stderr, "usage: bar_probe hold DIR FILE | try FILE | idle DIR NAME\n");
  return 2;
}
