// The soak's BAR client (tools/soak.sh; built there with cc): maps the first
// page of DEVDIR/resource0 and hammers it until STOP exists, keeping a summary
// in SUMMARY like client.py (ops, and errors as "ERRNO op"; SIGBUS for a
// touch of the mapping that faulted; MISMATCH for a wrong value; RESETLOSS
// when SCRATCH1 reads its reset value 0 right after a pwrite: the device was
// reset in between, as a daemon restart does to a simulated device).
//
//   bar SUMMARY STOP DEVDIR hammer    stores and loads through the mapping
//                                     (RAM at 0x100) and exact pwrite/pread
//                                     of SCRATCH1 (0x08) and ID (0x40)
//   bar SUMMARY STOP DEVDIR powered   the same, and in between the same
//                                     process (the claim holder) puts the
//                                     device in D3hot (a touch must fault,
//                                     a pread must fail), back to D0, and
//                                     resets it now and then
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { PAGE = 4096, MAX_KEYS = 64 };
static const uint32_t kId = 0x50434946;

static const char *summary, *stop_file;
static char keys[MAX_KEYS][64];
static unsigned long counts[MAX_KEYS];
static int nkeys;
static unsigned long ops;
static time_t last_dump;
static sigjmp_buf jump;
static volatile sig_atomic_t armed;

static void dump(int force) {
  time_t now = time(NULL);
  if (!force && now - last_dump < 2) return;
  last_dump = now;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", summary);
  FILE* f = fopen(tmp, "w");
  if (!f) return;
  fprintf(f, "{\"kind\": \"bar\", \"pid\": %d, \"ops\": %lu, \"errors\": {", getpid(), ops);
  for (int i = 0; i < nkeys; ++i) fprintf(f, "%s\"%s\": %lu", i ? ", " : "", keys[i], counts[i]);
  fprintf(f, "}}\n");
  fclose(f);
  rename(tmp, summary);
}

static void count(const char* name, const char* op) {
  char key[64];
  snprintf(key, sizeof key, "%s %s", name, op);
  int i = 0;
  while (i < nkeys && strcmp(keys[i], key) != 0) ++i;
  if (i == nkeys && nkeys < MAX_KEYS) snprintf(keys[nkeys++], sizeof keys[0], "%s", key);
  if (i < MAX_KEYS) ++counts[i];
  struct timespec ts = {0, 20 * 1000 * 1000};  // an error must not become a busy loop
  nanosleep(&ts, NULL);
}

static void count_errno(int e, const char* op) {
  const char* n = strerrorname_np(e);
  count(n ? n : "E?", op);
}

static int running(void) {
  dump(0);
  return access(stop_file, F_OK) != 0;
}

static void on_sigbus(int sig) {
  (void)sig;
  if (armed) siglongjmp(jump, 1);
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

// A store and a load through the mapping; 0, or -1 after a SIGBUS.
static int touch(volatile uint64_t* p, uint64_t v, uint64_t* out) {
  if (sigsetjmp(jump, 1) != 0) {
    armed = 0;
    return -1;
  }
  armed = 1;
  *p = v;
  *out = *p;
  armed = 0;
  return 0;
}

static void hammer(int fd, volatile uint8_t* map, int rounds, const char* tag) {
  char op[48];
  for (int i = 0; i < rounds; ++i) {
    uint64_t v = ((uint64_t)rand() << 32) | (uint64_t)rand(), got = 0;
    volatile uint64_t* slot = (volatile uint64_t*)(map + 0x100 + 8 * (i % 64));
    snprintf(op, sizeof op, "touch-%s", tag);
    if (touch(slot, v, &got) != 0) count("SIGBUS", op);
    else if (got != v) count("MISMATCH", op);
    else ++ops;
    snprintf(op, sizeof op, "pwrite-%s", tag);
    if (pwrite(fd, &v, 8, 0x08) != 8) {
      count_errno(errno, op);
      continue;
    }
    uint64_t back = 0;
    uint32_t id = 0;
    snprintf(op, sizeof op, "pread-%s", tag);
    if (pread(fd, &back, 8, 0x08) != 8 || pread(fd, &id, 4, 0x40) != 4) {
      count_errno(errno, op);
      continue;
    }
    if (id != kId || (back != v && back != 0)) count("MISMATCH", op);
    else if (back == 0) count("RESETLOSS", op);  // SCRATCH1 at its reset value: see soak.sh
    else ++ops;
    if (i % 50 == 49 && msync((void*)map, PAGE, MS_SYNC) != 0) count_errno(errno, "msync");
  }
}

static int write_text(const char* path, int fd, const char* text) {
  (void)path;
  return write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -1;
}

// In D3hot the claim holder's BAR access fails at once: a touch faults
// (SIGBUS), a pread is EIO. Both are what the README promises, counted apart.
static void power_cycle(const char* dev, int fd, volatile uint8_t* map) {
  char path[4096];
  snprintf(path, sizeof path, "%s/power_state", dev);
  int p = open(path, O_WRONLY);
  if (p < 0) {
    count_errno(errno, "open-power_state");
    return;
  }
  if (write_text(path, p, "D3hot") != 0) {
    count_errno(errno, "write-D3hot");
  } else {
    uint64_t got = 0;
    uint32_t id = 0;
    if (touch((volatile uint64_t*)(map + 0x100), 1, &got) != 0) count("SIGBUS", "touch-in-D3hot");
    else count("NOFAULT", "touch-in-D3hot");
    if (pread(fd, &id, 4, 0x40) < 0) count_errno(errno, "pread-in-D3hot");
    else count("NOERROR", "pread-in-D3hot");
    if (write_text(path, p, "D0") != 0) count_errno(errno, "write-D0");
    else ++ops;
  }
  close(p);
  if (rand() % 4 == 0) {
    snprintf(path, sizeof path, "%s/reset", dev);
    int r = open(path, O_WRONLY);
    if (r < 0 || write_text(path, r, "1") != 0) count_errno(errno, "reset");
    else ++ops;
    if (r >= 0) close(r);
  }
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: bar SUMMARY STOP DEVDIR hammer|powered\n");
    return 2;
  }
  summary = argv[1];
  stop_file = argv[2];
  const char* dev = argv[3];
  int powered = strcmp(argv[4], "powered") == 0;
  srand((unsigned)getpid());
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, NULL);
  char path[4096];
  snprintf(path, sizeof path, "%s/resource0", dev);
  while (running()) {
    int fd = open(path, O_RDWR);
    if (fd < 0) {
      count_errno(errno, "open-resource0");
      continue;
    }
    void* m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      count_errno(errno, "mmap");
      close(fd);
      continue;
    }
    for (int k = 0; k < 10 && running(); ++k) {
      hammer(fd, m, 100, "d0");
      if (powered) power_cycle(dev, fd, m);
    }
    munmap(m, PAGE);
    close(fd);
  }
  dump(1);
  return 0;
}
