// The mounts pcifs-bench measures, as RAII objects: the pcifs daemon (an
// exec'd child, `pcifs -f --backend=sim [--transport=T] MNT`) and the floor
// filesystem (a forked child running run_floor), a pair per transport. Each
// lives in a fresh temp directory ($TMPDIR or /tmp, pcifs-bench.XXXXXX) with
// the child's log; the destructor stops the child with SIGTERM, makes sure
// the mount is gone (fusermount3 -u, then -u -z) and removes the directory.
// Children get PR_SET_PDEATHSIG, so even a bench killed by SIGKILL leaves no
// mount behind.
//
// Both start functions fork: call them before the bench creates any thread.
// Children run in their own process group, so a Ctrl-C reaches only the bench,
// which then ends them in order. Not thread-safe; owned by main.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace pcifs::bench {

class BenchMount {
 public:
  // Starts `pcifs_exe -f --backend=BACKEND [--transport=TRANSPORT] MNT`, its
  // output going to a log file; wait_ready() then waits for MNT/`probe` to
  // exist. An empty `transport` leaves pcifs's default (auto). With `views`
  // above 1 the daemon serves that many views of every device, each from a
  // view file (`--view=`, no MOUNTPOINT argument): the first at MNT, the
  // others beside it in the temp directory; wait_ready() waits for all of
  // them, and stop() removes them.
  static std::unique_ptr<BenchMount> start_pcifs(
      const std::string& pcifs_exe, std::string* error, const std::string& backend = "sim",
      const std::string& probe = "devices/0000:01:00.0/config", const std::string& transport = "",
      unsigned views = 1);
  // Forks a child that serves the floor filesystem (floor_fs.hpp), over
  // io_uring when `uring`.
  static std::unique_ptr<BenchMount> start_floor(bool with_poll, bool uring, std::string* error);
  ~BenchMount();
  BenchMount(const BenchMount&) = delete;
  BenchMount& operator=(const BenchMount&) = delete;

  // Waits until MNT is a FUSE mount that shows the benchmarked device; false
  // (and *error, with the daemon's log) when the child died or time ran out.
  bool wait_ready(int timeout_ms, std::string* error);
  const std::string& mountpoint() const { return mnt_; }
  std::string device_dir() const { return mnt_ + "/devices/0000:01:00.0/"; }
  pid_t pid() const { return pid_; }
  // For pcifs, once wait_ready(): waits for the daemon's log line that says
  // which transport the view's requests come over ("view ... requests over
  // T") and returns every "requests over" line logged by then, or "" (and
  // *error) when none came in time.
  std::string wait_transport_log(int timeout_ms, std::string* error) const;
  // Stops the child and removes the mount; idempotent.
  void stop();
  // --verbose: each start says on stderr which child serves where.
  static void set_verbose(bool on) { verbose_ = on; }

 private:
  BenchMount() = default;
  bool make_dirs(const char* what, std::string* error);
  std::string log_tail() const;
  std::string name_;
  std::string dir_;  // the temp directory: mnt_ and log_ inside
  std::string mnt_;
  std::string log_;
  std::string probe_ = "devices/0000:01:00.0/config";
  std::vector<std::string> view_files_;  // views > 1: every view's file
  std::vector<std::string> extra_mnts_;  // views > 1: the mountpoints after MNT
  pid_t pid_ = -1;
  static inline bool verbose_ = false;
};

// Whether `path` is a mount point in this mount namespace.
bool is_mounted(const std::string& path);

// SIGINT/SIGTERM/SIGHUP set a flag the measurements poll between operations.
void install_stop_handlers();
bool stop_requested();

// Waits for our child PID, through the EINTR a stop signal brings (the bench's
// handlers have no SA_RESTART), so no child outlives the bench as a zombie.
// Returns its wait status.
int wait_child(pid_t pid);

}  // namespace pcifs::bench
