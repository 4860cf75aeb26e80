// Starting and stopping the benchmark's two FUSE servers (see mounts.hpp).
#include "mounts.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "floor_fs.hpp"

extern char** environ;

namespace pcifs::bench {
namespace {

constexpr long kFuseSuperMagic = 0x65735546;
// An atomic, not a volatile sig_atomic_t: the handler may run on any thread
// while the workload threads poll it (a data race for TSan, rightly).
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "signal-safe only when lock-free");

void on_stop_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

// In a freshly forked child: its own process group (a terminal's Ctrl-C goes
// to the bench only) and SIGTERM when the bench dies, however it dies.
void detach_child(pid_t parent) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);  // the bench died before prctl
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, SIG_DFL);
}

bool child_exited(pid_t pid, int* status) { return waitpid(pid, status, WNOHANG) == pid; }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended";
}

void run_fusermount(const std::string& mnt, bool lazy) {
  std::vector<std::string> args = {"fusermount3", lazy ? "-uz" : "-u", mnt};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0) {
    wait_child(pid);
  }
  posix_spawn_file_actions_destroy(&fa);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;  // no SA_RESTART: a blocked wait returns EINTR
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

bool stop_requested() { return g_stop.load(std::memory_order_relaxed); }

int wait_child(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

bool is_mounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == path) return true;
  }
  return false;
}

bool BenchMount::make_dirs(const char* what, std::string* error) {
  name_ = what;
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/pcifs-bench.XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    *error = "mkdtemp " + tmpl + ": " + std::strerror(errno);
    return false;
  }
  dir_ = tmpl;
  mnt_ = dir_ + "/mnt";
  log_ = dir_ + "/" + what + ".log";
  if (mkdir(mnt_.c_str(), 0755) != 0) {
    *error = "mkdir " + mnt_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

std::unique_ptr<BenchMount> BenchMount::start_pcifs(const std::string& pcifs_exe,
                                                    std::string* error, const std::string& backend,
                                                    const std::string& probe,
                                                    const std::string& transport, unsigned views) {
  std::unique_ptr<BenchMount> m(new BenchMount());
  if (!m->make_dirs("pcifs", error)) return nullptr;
  m->probe_ = probe;
  std::vector<std::string> args = {pcifs_exe, "-f", "--backend=" + backend};
  if (!transport.empty()) args.push_back("--transport=" + transport);
  if (views <= 1) args.push_back(m->mnt_);
  for (unsigned v = 0; v < views && views > 1; ++v) {
    const std::string mnt = v == 0 ? m->mnt_ : m->dir_ + "/v" + std::to_string(v);
    if (v > 0) {
      if (mkdir(mnt.c_str(), 0755) != 0) {
        *error = "mkdir " + mnt + ": " + std::strerror(errno);
        return nullptr;
      }
      m->extra_mnts_.push_back(mnt);
    }
    const std::string file = m->dir_ + "/view" + std::to_string(v) + ".json";
    m->view_files_.push_back(file);
    std::ofstream(file) << R"({"name": "v)" << v << R"(", "mountpoint": ")" << mnt << "\"}\n";
    args.push_back("--view=" + file);
  }
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    return nullptr;
  }
  if (pid == 0) {
    detach_child(parent);
    const int log = open(m->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    execv(argv[0], argv.data());
    std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  m->pid_ = pid;
  if (verbose_)
    std::fprintf(stderr, "pcifs-bench: pcifs (pid %d) serves %s\n", pid, m->mnt_.c_str());
  return m;
}

std::unique_ptr<BenchMount> BenchMount::start_floor(bool with_poll, bool uring,
                                                    std::string* error) {
  std::unique_ptr<BenchMount> m(new BenchMount());
  if (!m->make_dirs("floor", error)) return nullptr;
  std::fflush(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    return nullptr;
  }
  if (pid == 0) {
    detach_child(parent);
    // Its session's log and errors, for log_tail() if it fails.
    const int log = open(m->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
      close(log);
    }
    _exit(run_floor(m->mnt_, with_poll, uring));
  }
  m->pid_ = pid;
  if (verbose_)
    std::fprintf(stderr, "pcifs-bench: floor (pid %d) serves %s\n", pid, m->mnt_.c_str());
  return m;
}

bool BenchMount::wait_ready(int timeout_ms, std::string* error) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string probe = mnt_ + "/" + probe_;
  while (std::chrono::steady_clock::now() < end && !stop_requested()) {
    int status = 0;
    if (child_exited(pid_, &status)) {
      pid_ = -1;
      *error = name_ + " " + describe_status(status) + " before mounting" + log_tail();
      return false;
    }
    struct statfs fs {};
    struct stat st {};
    auto fuse = [&fs](const std::string& p) {
      return statfs(p.c_str(), &fs) == 0 && fs.f_type == kFuseSuperMagic;
    };
    if (fuse(mnt_) && stat(probe.c_str(), &st) == 0 &&
        std::all_of(extra_mnts_.begin(), extra_mnts_.end(), fuse)) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  *error = name_ + ": " + mnt_ + " did not become a FUSE mount showing " + probe + log_tail();
  return false;
}

std::string BenchMount::wait_transport_log(int timeout_ms, std::string* error) const {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!stop_requested()) {
    std::ifstream in(log_);
    std::string line, found;
    bool view_line = false;
    while (std::getline(in, line)) {
      if (line.find("requests over ") == std::string::npos) continue;
      found += line + "\n";
      if (line.find("view ") != std::string::npos) view_line = true;
    }
    if (view_line) return found;
    if (std::chrono::steady_clock::now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  *error = name_ + ": no \"view ... requests over\" line in its log" + log_tail();
  return "";
}

std::string BenchMount::log_tail() const {
  std::ifstream in(log_);
  if (!in) return "";
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  std::string out = "\n--- " + log_ + " (last lines) ---";
  for (size_t i = lines.size() > 10 ? lines.size() - 10 : 0; i < lines.size(); ++i) {
    out += "\n" + lines[i];
  }
  return out;
}

void BenchMount::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool reaped = child_exited(pid_, &status);
    while (!reaped && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      reaped = child_exited(pid_, &status);
    }
    if (!reaped) {  // still our unreaped child, so the pid cannot have been reused
      kill(pid_, SIGKILL);
      wait_child(pid_);
    }
    pid_ = -1;
  }
  for (const auto& extra : extra_mnts_) {
    if (is_mounted(extra)) run_fusermount(extra, false);
    if (is_mounted(extra)) run_fusermount(extra, true);
    rmdir(extra.c_str());
  }
  extra_mnts_.clear();
  for (const auto& f : view_files_) unlink(f.c_str());
  view_files_.clear();
  if (!mnt_.empty()) {
    if (is_mounted(mnt_)) run_fusermount(mnt_, false);
    if (is_mounted(mnt_)) run_fusermount(mnt_, true);
    rmdir(mnt_.c_str());
    unlink(log_.c_str());
    rmdir(dir_.c_str());
    mnt_.clear();
  }
}

BenchMount::~BenchMount() { stop(); }

}  // namespace pcifs::bench
