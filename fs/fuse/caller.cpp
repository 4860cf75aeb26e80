#include "fuse/caller.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pcifs::fuse {

Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->pid, ctx->uid, ctx->gid};
}

pid_t tgid_of(pid_t tid) {
  if (tid <= 0) return tid;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", tid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tid;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return tid;
  buf[n] = '\0';
  const char* p = std::strstr(buf, "\nTgid:");
  if (!p) return tid;
  const long v = std::strtol(p + 6, nullptr, 10);
  return v > 0 ? static_cast<pid_t>(v) : tid;
}

Caller claiming_caller_of(fuse_req_t req) {
  Caller c = caller_of(req);
  c.pid = tgid_of(c.pid);
  return c;
}

}  // namespace pcifs::fuse
