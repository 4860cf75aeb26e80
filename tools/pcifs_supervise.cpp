// pcifs-supervise: a minimal service manager that plays systemd's part for one
// service, so that tests and the soak can restart pcifs through the
// file-descriptor store without systemd:
//
//   pcifs-supervise [--status FILE] [--no-fd-store] [--fd-store-max N]
//                   [--restart=on-failure|always|no] [--stop-timeout SECONDS]
//                   -- COMMAND ARGS...
//
// It speaks the protocols of sd_notify(3) / sd_pid_notify_with_fds(3) and
// sd_listen_fds(3) as systemd does (src/core/service.c, NotifyAccess=main,
// FileDescriptorStorePreserve=restart):
//  - NOTIFY_SOCKET names an AF_UNIX datagram socket in a private temp dir;
//    datagrams are KEY=VALUE lines, fds ride along as SCM_RIGHTS and the
//    sender is known by SCM_CREDENTIALS. Only the current child's pid is
//    heard; fds from anyone else are closed.
//  - READY=1, STOPPING=1, STATUS=...: logged (READY=1 writes --status).
//  - FDSTORE=1 keeps the message's fds under FDNAME= (default "stored"); an
//    fd already in the store (the same open file: kcmp) is not added again;
//    beyond --fd-store-max (default 4096; 0 with --no-fd-store) the fd is
//    closed and the event logged. Fds sent without FDSTORE=1 are closed.
//  - FDSTOREREMOVE=1 with FDNAME= closes every stored fd of that name.
//  - FDPOLL=0 stores the fds unwatched; otherwise (systemd's default) a
//    stored fd that reports POLLHUP or POLLERR is closed and forgotten (a
//    /dev/fuse fd does once its mount is gone).
//  - Every start passes the store as LISTEN_FDS=n (fds 3..3+n-1, not
//    close-on-exec), LISTEN_PID=<the child's pid>, LISTEN_FDNAMES=a:b:...;
//    with an empty store these are unset. Every other fd above 2 is closed
//    in the child, as systemd does. The supervisor keeps its copies
//    across restarts and closes them when it exits.
// Signals: SIGUSR1 kills the child with SIGKILL and starts a new one (a
// crash); SIGUSR2 stops it with SIGTERM and starts a new one (a restart or
// an upgrade); SIGTERM/SIGINT stop it and exit with its status (128+signal if
// a signal ended it). SIGKILL follows SIGTERM after --stop-timeout (90 s, as
// TimeoutStopSec=). A child that exits by itself is restarted per --restart
// (on-failure: a non-zero exit or a signal), after 100 ms, at most 5 times in
// 10 s (systemd's RestartSec, StartLimitBurst, StartLimitIntervalSec).
// --status FILE: after each READY=1, and after each change of the store once
// the generation is ready, FILE is replaced atomically by one line
// "<generation> <pid> <stored-fd-count>\n"; generation counts starts from 1.
// Every event is logged to stderr with a UTC timestamp.
// Exit status: the child's as above; 2 on a bad command line; 1 if the
// supervisor itself fails.
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr size_t kMaxDatagram = 4096;  // systemd's NOTIFY_BUFFER_MAX (PIPE_BUF)
constexpr size_t kMaxFdsPerMessage = 768;
constexpr int kStartLimitBurst = 5;
constexpr int64_t kStartLimitIntervalMs = 10000;
constexpr int64_t kRestartDelayMs = 100;

void log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log(const char* fmt, ...) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char head[64];
  strftime(head, sizeof head, "%Y-%m-%dT%H:%M:%S", &t);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s.%03ldZ pcifs-supervise: %s\n", head, ts.tv_nsec / 1000000, msg);
}

int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

enum class Restart { kNo, kOnFailure, kAlways };

struct Options {
  std::string status_file;
  size_t fd_store_max = 4096;
  Restart restart = Restart::kOnFailure;
  int stop_timeout_s = 90;
  std::vector<char*> command;  // null-terminated
};

struct StoredFd {
  int fd;
  std::string name;
  bool poll;
};

// systemd's fdname_is_valid: printable ASCII without ':', at most 255 bytes.
bool fdname_is_valid(std::string_view s) {
  if (s.size() > 255) return false;
  for (char c : s)
    if (c < ' ' || c > '~' || c == ':') return false;
  return true;
}

// systemd's same_fd: the same open file description (kcmp); without kcmp, the
// same inode and flags, device nodes never alike.
bool same_fd(int a, int b) {
  if (a == b) return true;
  pid_t self = getpid();
  long r = syscall(SYS_kcmp, self, self, KCMP_FILE, a, b);
  if (r >= 0) return r == 0;
  struct stat sa {
  }, sb{};
  if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0) return false;
  if (sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino) return false;
  if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) return false;
  return fcntl(a, F_GETFL) == fcntl(b, F_GETFL);
}

class Supervisor {
 public:
  explicit Supervisor(Options o) : opt_(std::move(o)) {}
  int run();

 private:
  void setup();
  void start_child();
  [[noreturn]] void exec_child(const std::vector<int>& fds, const std::string& names);
  void on_notify();
  void handle_message(std::string_view text, const std::vector<int>& fds);
  void store_fds(const std::vector<int>& fds, const std::string& name, bool poll);
  void remove_fds(const std::string& name);
  // The notify socket, the signalfd, then the stored fds that are watched
  // (poll_store reads their results from index 2 on).
  std::vector<pollfd> poll_set(int sock, int sigfd) const;
  void poll_store(const std::vector<pollfd>& pfds);
  void on_signal();
  void on_child_exit(int status);
  void stop_child(int sig, bool then_exit);
  void write_status();
  void close_store();

  Options opt_;
  std::string dir_;
  std::string sock_path_;
  int sock_ = -1;
  int sigfd_ = -1;
  sigset_t old_mask_{};
  rlimit old_nofile_{};
  std::vector<StoredFd> store_;
  pid_t child_ = -1;
  unsigned generation_ = 0;
  bool ready_ = false;
  // What to do when the child is reaped: restart it (SIGUSR1/2), exit
  // (SIGTERM/INT), or apply --restart (it exited by itself).
  enum class Next { kPolicy, kRestart, kExit } next_ = Next::kPolicy;
  int64_t kill_at_ms_ = -1;  // SIGKILL a child that ignored SIGTERM
  int64_t restart_at_ms_ = -1;
  std::vector<int64_t> auto_starts_;
  bool done_ = false;
  int exit_status_ = 0;
};

void Supervisor::setup() {
  // Room for a full store plus the child's temporary copies; the child gets
  // the caller's limit back.
  getrlimit(RLIMIT_NOFILE, &old_nofile_);
  rlimit raised = old_nofile_;
  raised.rlim_cur = raised.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);

  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/pcifs-supervise.XXXXXX";
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp: " + std::string(strerror(errno)));
  dir_ = templ;
  sock_path_ = dir_ + "/notify";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock_path_.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long");
  std::memcpy(addr.sun_path, sock_path_.c_str(), sock_path_.size() + 1);
  sock_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock_ < 0) throw std::runtime_error("socket: " + std::string(strerror(errno)));
  if (bind(sock_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    throw std::runtime_error("bind " + sock_path_ + ": " + strerror(errno));
  int one = 1;
  setsockopt(sock_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  int rcvbuf = 8 << 20;
  if (setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
    setsockopt(sock_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, &old_mask_);
  sigfd_ = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd_ < 0) throw std::runtime_error("signalfd: " + std::string(strerror(errno)));
  signal(SIGPIPE, SIG_IGN);
  log("notify socket %s", sock_path_.c_str());
}

void Supervisor::exec_child(const std::vector<int>& fds, const std::string& names) {
  sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  signal(SIGPIPE, SIG_DFL);
  const int n = static_cast<int>(fds.size());
  // Copy every fd above the target range first, so that dup2 onto 3..3+n-1
  // cannot clobber a stored fd that happens to sit there.
  std::vector<int> high(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) {
    high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + n);
    if (high[i] < 0) _exit(127);
  }
  for (size_t i = 0; i < fds.size(); ++i)  // dup2 leaves the new fd inheritable
    if (dup2(high[i], 3 + static_cast<int>(i)) < 0) _exit(127);
  // Nothing else crosses over, as under systemd: only 0-2 and the store.
  close_range(static_cast<unsigned>(3 + n), ~0U, 0);
  setrlimit(RLIMIT_NOFILE, &old_nofile_);
  setenv("NOTIFY_SOCKET", sock_path_.c_str(), 1);
  if (n > 0) {
    setenv("LISTEN_FDS", std::to_string(n).c_str(), 1);
    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    setenv("LISTEN_FDNAMES", names.c_str(), 1);
  } else {
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
  }
  execvp(opt_.command[0], opt_.command.data());
  std::fprintf(stderr, "pcifs-supervise: exec %s: %s\n", opt_.command[0], strerror(errno));
  _exit(127);
}

void Supervisor::start_child() {
  // A stored fd that hung up when the last generation died leaves the store
  // before the next one starts. The death that brought us here may have been
  // reaped in the same pass as the signal that caused it, before any poll
  // could report the hang-up; the kernel closes a dead process's files before
  // its parent learns of the death, so a poll now sees every such hang-up.
  std::vector<pollfd> now = poll_set(-1, -1);  // only the store
  if (now.size() > 2 && poll(now.data(), now.size(), 0) > 0) poll_store(now);
  std::vector<int> fds;
  std::string names;
  for (const auto& s : store_) {
    if (!fds.empty()) names += ':';
    fds.push_back(s.fd);
    names += s.name;
  }
  ++generation_;
  ready_ = false;
  next_ = Next::kPolicy;
  kill_at_ms_ = -1;
  restart_at_ms_ = -1;
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork: " + std::string(strerror(errno)));
  if (pid == 0) exec_child(fds, names);
  child_ = pid;
  log("generation %u: started pid %d with %zu stored fds%s%s", generation_, pid, fds.size(),
      fds.empty() ? "" : ": ", names.c_str());
}

void Supervisor::write_status() {
  if (opt_.status_file.empty() || !ready_) return;
  std::string tmp = opt_.status_file + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "we");
  if (!f) {
    log("status %s: %s", tmp.c_str(), strerror(errno));
    return;
  }
  std::fprintf(f, "%u %d %zu\n", generation_, child_, store_.size());
  bool ok = std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || rename(tmp.c_str(), opt_.status_file.c_str()) < 0)
    log("status %s: %s", opt_.status_file.c_str(), strerror(errno));
}

void Supervisor::store_fds(const std::vector<int>& fds, const std::string& name, bool poll) {
  for (int fd : fds) {
    bool dup = false;
    for (const auto& s : store_) dup = dup || same_fd(s.fd, fd);
    if (dup) {
      log("fd store: fd already stored, not added again (name %s)", name.c_str());
      close(fd);
    } else if (store_.size() >= opt_.fd_store_max) {
      log("fd store: hit the limit of %zu fds, closing the fd passed as %s", opt_.fd_store_max,
          name.c_str());
      close(fd);
    } else {
      store_.push_back({fd, name, poll});
      log("fd store: added %s (%zu stored)", name.c_str(), store_.size());
    }
  }
}

void Supervisor::remove_fds(const std::string& name) {
  size_t before = store_.size();
  std::erase_if(store_, [&](const StoredFd& s) {
    if (s.name != name) return false;
    close(s.fd);
    return true;
  });
  log("fd store: FDSTOREREMOVE %s removed %zu (%zu stored)", name.c_str(), before - store_.size(),
      store_.size());
}

void Supervisor::handle_message(std::string_view text, const std::vector<int>& fds) {
  std::vector<std::string_view> tags;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty()) tags.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  auto has = [&](std::string_view t) {
    for (auto x : tags)
      if (x == t) return true;
    return false;
  };
  auto value = [&](std::string_view key) -> const std::string_view* {
    const std::string_view* found = nullptr;  // the last one wins, as in systemd
    for (const auto& x : tags)
      if (x.starts_with(key)) found = &x;
    return found;
  };
  for (auto t : tags) {
    if (t.starts_with("FDNAME=") || t == "FDSTORE=1") continue;  // logged below
    log("notify from %d: %.*s", child_, static_cast<int>(t.size()), t.data());
  }
  std::string name;
  bool name_ok = false;
  if (auto v = value("FDNAME=")) {
    name = std::string(v->substr(7));
    name_ok = fdname_is_valid(name);
    if (!name_ok) log("FDNAME=%s is invalid, ignoring it", name.c_str());
  }
  bool changed = false;
  if (has("READY=1") && !ready_) {
    ready_ = true;
    changed = true;
    log("generation %u: ready (pid %d)", generation_, child_);
  }
  if (has("FDSTOREREMOVE=1")) {
    if (name_ok) {
      remove_fds(name);
      changed = true;
    } else {
      log("FDSTOREREMOVE=1 without a valid FDNAME=, ignoring");
    }
  }
  if (has("FDSTORE=1")) {
    store_fds(fds, name_ok ? name : "stored", !has("FDPOLL=0"));
    changed = true;
  } else {
    if (!fds.empty()) log("closing %zu fds passed without FDSTORE=1", fds.size());
    for (int fd : fds) close(fd);
  }
  if (changed) write_status();
}

void Supervisor::on_notify() {
  for (;;) {
    char buf[kMaxDatagram + 1];
    alignas(
        cmsghdr) char ctl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    iovec iov{buf, kMaxDatagram};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    ssize_t n = recvmsg(sock_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) log("recvmsg: %s", strerror(errno));
      return;
    }
    std::vector<int> fds;
    const ucred* cred = nullptr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
        fds.insert(fds.end(), p, p + k);
      } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(ucred))) {
        cred = reinterpret_cast<const ucred*>(CMSG_DATA(c));
      }
    }
    auto drop = [&](const char* why) {
      log("ignoring a notification (%s)%s", why, fds.empty() ? "" : ", closing its fds");
      for (int fd : fds) close(fd);
    };
    if (!cred || cred->pid <= 0) {
      drop("no sender credentials");
    } else if (child_ <= 0 || cred->pid != child_) {
      char why[96];
      std::snprintf(why, sizeof why, "from pid %d, not the main pid %d", cred->pid, child_);
      drop(why);
    } else if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      drop("control data truncated");
    } else if (static_cast<size_t>(n) > kMaxDatagram || (msg.msg_flags & MSG_TRUNC) != 0) {
      drop("message too long");
    } else {
      handle_message(std::string_view(buf, static_cast<size_t>(n)), fds);
    }
  }
}

std::vector<pollfd> Supervisor::poll_set(int sock, int sigfd) const {
  std::vector<pollfd> pfds{{sock, POLLIN, 0}, {sigfd, POLLIN, 0}};  // poll ignores fd -1
  for (const auto& s : store_)
    if (s.poll) pfds.push_back({s.fd, 0, 0});
  return pfds;
}

void Supervisor::poll_store(const std::vector<pollfd>& pfds) {
  // pfds[2..] mirror store_ in order, for the entries with poll set.
  size_t k = 2;
  bool changed = false;
  std::vector<StoredFd> keep;
  for (auto& s : store_) {
    if (s.poll && k < pfds.size() && pfds[k++].revents != 0) {
      log("fd store: %s reported %s, removing it", s.name.c_str(),
          (pfds[k - 1].revents & POLLHUP) ? "POLLHUP" : "POLLERR");
      close(s.fd);
      changed = true;
    } else {
      keep.push_back(s);
    }
  }
  store_ = std::move(keep);
  if (changed) write_status();
}

void Supervisor::stop_child(int sig, bool then_exit) {
  next_ = then_exit ? Next::kExit : Next::kRestart;
  if (child_ <= 0) return;
  log("sending %s to pid %d", strsignal(sig), child_);
  kill(child_, sig);
  if (sig == SIGTERM) kill_at_ms_ = now_ms() + int64_t{opt_.stop_timeout_s} * 1000;
}

void Supervisor::on_child_exit(int status) {
  char how[64];
  if (WIFEXITED(status))
    std::snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
  else
    std::snprintf(how, sizeof how, "killed by %s", strsignal(WTERMSIG(status)));
  log("generation %u: pid %d %s", generation_, child_, how);
  child_ = -1;
  ready_ = false;
  kill_at_ms_ = -1;
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (next_ == Next::kExit) {
    done_ = true;
  } else if (next_ == Next::kRestart) {
    start_child();
  } else {
    bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    bool again =
        opt_.restart == Restart::kAlways || (opt_.restart == Restart::kOnFailure && failed);
    int64_t t = now_ms();
    std::erase_if(auto_starts_, [&](int64_t s) { return t - s > kStartLimitIntervalMs; });
    if (again && static_cast<int>(auto_starts_.size()) >= kStartLimitBurst) {
      log("start limit hit (%d restarts in %lld ms), giving up", kStartLimitBurst,
          static_cast<long long>(kStartLimitIntervalMs));
      again = false;
    }
    if (again) {
      auto_starts_.push_back(t);
      restart_at_ms_ = t + kRestartDelayMs;
      log("restarting in %lld ms", static_cast<long long>(kRestartDelayMs));
    } else {
      done_ = true;
    }
  }
}

void Supervisor::on_signal() {
  signalfd_siginfo si{};
  while (read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    int sig = static_cast<int>(si.ssi_signo);
    if (sig == SIGCHLD) {
      on_notify();  // what the child sent before it died is still the main pid's
      for (;;) {
        int status = 0;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p <= 0) break;
        if (p == child_) on_child_exit(status);
      }
      continue;
    }
    log("received %s from pid %u", strsignal(sig), si.ssi_pid);
    if (sig == SIGUSR1) {
      if (child_ > 0)
        stop_child(SIGKILL, false);
      else
        start_child();
    } else if (sig == SIGUSR2) {
      if (child_ > 0)
        stop_child(SIGTERM, false);
      else
        start_child();
    } else if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      if (child_ > 0) {
        stop_child(SIGTERM, true);
      } else {
        done_ = true;
      }
    }
  }
}

void Supervisor::close_store() {
  for (const auto& s : store_) close(s.fd);
  if (!store_.empty()) log("fd store: closed %zu fds", store_.size());
  store_.clear();
}

int Supervisor::run() {
  setup();
  start_child();
  while (!done_) {
    std::vector<pollfd> pfds = poll_set(sock_, sigfd_);
    int timeout = -1;
    int64_t t = now_ms();
    if (kill_at_ms_ >= 0) timeout = static_cast<int>(std::max<int64_t>(0, kill_at_ms_ - t));
    if (restart_at_ms_ >= 0) timeout = static_cast<int>(std::max<int64_t>(0, restart_at_ms_ - t));
    int r = poll(pfds.data(), pfds.size(), timeout);
    if (r < 0 && errno != EINTR) throw std::runtime_error("poll: " + std::string(strerror(errno)));
    if (r > 0 && pfds.size() > 2) poll_store(pfds);  // first: pfds mirror store_ as it is
    if (r > 0 && pfds[0].revents) on_notify();       // before SIGCHLD: see on_signal
    if (r > 0 && pfds[1].revents) on_signal();
    t = now_ms();
    if (kill_at_ms_ >= 0 && t >= kill_at_ms_ && child_ > 0) {
      log("pid %d did not stop within %d s, sending SIGKILL", child_, opt_.stop_timeout_s);
      kill(child_, SIGKILL);
      kill_at_ms_ = -1;
    }
    if (restart_at_ms_ >= 0 && t >= restart_at_ms_ && child_ <= 0 && !done_) start_child();
  }
  close_store();
  close(sock_);
  unlink(sock_path_.c_str());
  rmdir(dir_.c_str());
  log("exiting with status %d", exit_status_);
  return exit_status_;
}

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "pcifs-supervise: %s\n", why);
  std::fprintf(stderr,
               "usage: pcifs-supervise [--status FILE] [--no-fd-store] [--fd-store-max N]\n"
               "                       [--restart=on-failure|always|no] [--stop-timeout S]\n"
               "                       -- COMMAND ARGS...\n");
  std::exit(why ? 2 : 0);
}

Options parse(int argc, char** argv) {
  Options o;
  int i = 1;
  auto arg_value = [&](std::string_view a, std::string_view key) -> std::string {
    if (a.size() > key.size() && a[key.size()] == '=') return std::string(a.substr(key.size() + 1));
    if (i + 1 >= argc) usage(("missing value for " + std::string(key)).c_str());
    return argv[++i];
  };
  auto number = [](const std::string& s, const char* what) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end || errno || s[0] == '-') usage((std::string("bad ") + what).c_str());
    return v;
  };
  for (; i < argc; ++i) {
    std::string_view a = argv[i];
    auto is = [&](std::string_view key) {
      return a == key || (a.starts_with(key) && a.size() > key.size() && a[key.size()] == '=');
    };
    if (a == "--") {
      ++i;
      break;
    } else if (a == "-h" || a == "--help") {
      usage(nullptr);
    } else if (is("--status")) {
      o.status_file = arg_value(a, "--status");
    } else if (a == "--no-fd-store") {
      o.fd_store_max = 0;
    } else if (is("--fd-store-max")) {
      o.fd_store_max = number(arg_value(a, "--fd-store-max"), "--fd-store-max");
    } else if (is("--stop-timeout")) {
      o.stop_timeout_s = static_cast<int>(number(arg_value(a, "--stop-timeout"), "--stop-timeout"));
    } else if (is("--restart")) {
      std::string v = arg_value(a, "--restart");
      if (v == "no")
        o.restart = Restart::kNo;
      else if (v == "on-failure")
        o.restart = Restart::kOnFailure;
      else if (v == "always")
        o.restart = Restart::kAlways;
      else
        usage("--restart takes on-failure, always or no");
    } else {
      usage(("unknown option " + std::string(a)).c_str());
    }
  }
  if (i >= argc) usage("no COMMAND after --");
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  o.command.push_back(nullptr);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  try {
    return Supervisor(std::move(o)).run();
  } catch (const std::exception& e) {
    log("fatal: %s", e.what());
    return 1;
  }
}
