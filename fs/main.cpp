// pcifs: the command line of SPEC S2, logging, daemonizing; then
// pcifs::fuse::serve mounts the views and runs the loops. Two subcommands only
// read view files and print: `pcifs cdi` (a CDI spec for container engines)
// and `pcifs mountpoint` (what a service manager needs to clean up after a
// daemon that died).
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "control/cdi_hook.hpp"
#include "control/cli.hpp"
#include "core/cdi_spec.hpp"
#include "core/view_policy.hpp"
#include "fuse/daemon.hpp"
#include "select/open_backend.hpp"

namespace {

constexpr int kUsageError = 2;  // SPEC S2

struct Args {
  std::string backend{pcifs::backend::kDefaultBackendSpec};
  std::vector<std::string> views;
  std::vector<std::string> options;
  std::string mountpoint;
  std::string log_level = "info";
  std::string lock_dir = "/run/pcifs/locks";
  std::string control;  // a host daemon's control socket [S16]
  std::string state_dir = "/var/lib/pcifs/views";
  std::string cdi_dir = "/var/run/cdi";
  std::string view_root = "/run/pcifs/views";
  unsigned doe_timeout_ms = 1000;  // PCIe 6.0 §6.30.2: 1 s
  unsigned max_threads = 16;       // FUSE workers per view
  std::string transport = "auto";  // README "Transports"
  bool foreground = false;
  bool fd_store = false;  // README "Restarts"
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "pcifs: %s\n", msg.c_str());
  std::exit(kUsageError);
}

std::vector<std::string> split_options(const std::vector<std::string>& raw) {
  std::vector<std::string> out;
  for (const auto& r : raw) {
    size_t start = 0;
    while (start <= r.size()) {
      const size_t comma = std::min(r.find(',', start), r.size());
      if (comma > start) out.push_back(r.substr(start, comma - start));
      start = comma + 1;
    }
  }
  return out;
}

// Whether `path` (as written, not resolved) is where a pcifs FUSE mount
// sits, per /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - TYPE ...".
bool is_pcifs_mount(const std::string& path) {
  std::string want = std::filesystem::path(path).lexically_normal().string();
  while (want.size() > 1 && want.back() == '/') want.pop_back();
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mp;
    f >> id >> parent >> dev >> root >> mp;
    std::string unescaped;  // the kernel writes ' ', '\t', '\n', '\\' as \ooo
    for (size_t i = 0; i < mp.size(); ++i) {
      const bool octal =
          mp[i] == '\\' && i + 3 < mp.size() &&
          std::all_of(mp.begin() + static_cast<long>(i) + 1, mp.begin() + static_cast<long>(i) + 4,
                      [](char c) { return c >= '0' && c <= '7'; });
      if (!octal) {
        unescaped += mp[i];
        continue;
      }
      unescaped +=
          static_cast<char>((mp[i + 1] - '0') * 64 + (mp[i + 2] - '0') * 8 + (mp[i + 3] - '0'));
      i += 3;
    }
    const size_t dash = line.find(" - ");
    if (unescaped == want && dash != std::string::npos &&
        line.compare(dash + 3, 11, "fuse.pcifs ") == 0) {
      return true;
    }
  }
  return false;
}

// A directory, or the mount a previous daemon left there: dead (ENOTCONN,
// detached before mounting) or kept by the service manager's fd store (taken
// over; any stat of it would wait for the daemon that is starting).
bool is_dir(const std::string& path) {
  if (is_pcifs_mount(path)) return true;
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The views of this run, each with a mountpoint that is a directory.
// allow_dma (view.hpp) lets a device master on host memory: only root grants
// it. A view file saying so must be root's and writable by nobody else, or a
// user who can edit it could grant it to himself.
void check_dma_grant(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) usage_error(file + ": cannot be read");
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%o", static_cast<unsigned>(st.st_mode & 07777));
    usage_error(file + ": allow_dma: expected a file owned by root and writable by root only " +
                "(only root grants DMA), got uid " + std::to_string(st.st_uid) + " mode " + mode);
  }
}

std::vector<pcifs::ViewPolicy> build_views(const Args& a) {
  std::vector<pcifs::ViewPolicy> views;
  if (a.views.empty()) {
    if (a.mountpoint.empty() && !a.control.empty()) return views;  // a host daemon, views to come
    if (a.mountpoint.empty()) {
      usage_error("MOUNTPOINT: expected a directory (or --view files, or --control)");
    }
    views.push_back(pcifs::core::default_view());
    views.back().mountpoint = a.mountpoint;
  }
  for (const auto& file : a.views) {
    std::string error;
    auto v = pcifs::core::load_view_file(file, &error);
    if (!v) usage_error(error);
    if (v->allow_dma) check_dma_grant(file);
    if (!a.mountpoint.empty() && a.views.size() == 1) v->mountpoint = a.mountpoint;
    if (v->mountpoint.empty()) {
      usage_error(file + ": mountpoint: expected a directory (or MOUNTPOINT on the command line)");
    }
    views.push_back(std::move(*v));
  }
  if (!a.mountpoint.empty() && a.views.size() > 1) {
    usage_error("MOUNTPOINT: expected none: with several --view files, each names its own");
  }
  // "/m", "/m/" and a symlink to /m are one directory; a second mount there,
  // or inside another view's mountpoint, would resolve through the daemon's
  // own first mount before its loop serves anything: a deadlock on itself.
  std::vector<std::string> seen;
  for (const auto& v : views) {
    const std::string where = v.source.empty() ? "MOUNTPOINT" : v.source + ": mountpoint";
    if (!is_dir(v.mountpoint)) usage_error(where + ": expected a directory, got " + v.mountpoint);
    // realpath would stat a mount kept by the fd store: taken as written.
    char* resolved =
        is_pcifs_mount(v.mountpoint) ? nullptr : ::realpath(v.mountpoint.c_str(), nullptr);
    const std::string real = resolved != nullptr ? resolved : v.mountpoint;
    std::free(resolved);
    for (const auto& other : seen) {
      if (real == other || real.rfind(other + "/", 0) == 0 || other.rfind(real + "/", 0) == 0) {
        usage_error(where + ": expected a mountpoint no other view uses or contains, got " +
                    v.mountpoint);
      }
    }
    seen.push_back(real);
  }
  return views;
}

// The options of the subcommands that read view files and print.
struct ToolArgs {
  std::vector<std::string> views;
  std::string container_path{pcifs::core::kCdiContainerPath};
};

// View files for a container or a service: each must name its mountpoint,
// since there is no MOUNTPOINT argument to fall back on.
std::vector<pcifs::ViewPolicy> load_views(const std::vector<std::string>& files) {
  std::vector<pcifs::ViewPolicy> views;
  for (const auto& file : files) {
    std::string error;
    auto v = pcifs::core::load_view_file(file, &error);
    if (!v) usage_error(error);
    if (v->mountpoint.empty()) usage_error(file + ": mountpoint: expected an absolute path");
    views.push_back(std::move(*v));
  }
  return views;
}

int run_cdi(const ToolArgs& t) {
  pcifs::core::CdiOptions o;
  o.container_path = t.container_path;
  o.hook_binary = pcifs::control::self_executable();  // each view's hook: `pcifs cdi-hook`
  std::string error;
  auto spec = pcifs::core::cdi_spec(load_views(t.views), o, &error);
  if (!spec) usage_error(error);
  std::printf("%s\n", spec->dump(2).c_str());
  return 0;
}

int run_mountpoint(const ToolArgs& t) {
  for (const auto& v : load_views(t.views)) std::printf("%s\n", v.mountpoint.c_str());
  return 0;
}

void add_subcommands(CLI::App& app, ToolArgs& cdi_args, ToolArgs& mp_args) {
  auto* cdi = app.add_subcommand(
      "cdi",
      "print a Container Device Interface spec for the views and exit: one device "
      "pcifs.io/view=NAME per view, a bind mount of its mountpoint (save as /etc/cdi/pcifs.json; "
      "then e.g. podman run --device pcifs.io/view=NAME)");
  cdi->add_option("--view", cdi_args.views, "FILE.json: a view that names its mountpoint; repeat")
      ->required()
      ->allow_extra_args(false);
  cdi->add_option("--container-path", cdi_args.container_path,
                  "where each view appears inside the container")
      ->capture_default_str();
  auto* mp = app.add_subcommand(
      "mountpoint", "print each view's mountpoint, one per line, and exit (for service units)");
  mp->add_option("--view", mp_args.views, "FILE.json: a view that names its mountpoint; repeat")
      ->required()
      ->allow_extra_args(false);
}

std::string absolute_option(const std::string& name, const std::string& value) {
  if (value == "none") return "";
  if (value.empty() || value[0] != '/') usage_error(name + ": expected an absolute path or none");
  return value;
}

void host_daemon_options(const Args& a, pcifs::fuse::DaemonOptions& o) {
  if (a.control[0] != '/') usage_error("--control: expected an absolute path");
  if (geteuid() != 0) usage_error("--control: a host daemon runs as root");
  o.control = a.control;
  o.state_dir = absolute_option("--state-dir", a.state_dir);
  o.cdi_dir = absolute_option("--cdi-dir", a.cdi_dir);
  o.view_root = absolute_option("--view-root", a.view_root);
  if (o.view_root.empty()) usage_error("--view-root: expected an absolute path");
  o.hook_binary = pcifs::control::self_executable();
}

void setup_logging(const std::string& level, bool foreground) {
  std::shared_ptr<spdlog::logger> logger;
  if (foreground) {
    logger = spdlog::stderr_color_mt("pcifs");
  } else {
    logger = spdlog::syslog_logger_mt("pcifs", "pcifs", LOG_PID, LOG_DAEMON);
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// Without -f: the parent waits until the child has mounted every view (exit
// 0) or failed (its status), so `pcifs MNT && ls MNT` works. Forked before
// any thread exists.
int daemonize(int* ready_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  const pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    close(fds[0]);
    *ready_fd = fds[1];
    setsid();
    return 0;
  }
  close(fds[1]);
  char ok = 0;
  if (read(fds[0], &ok, 1) == 1) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

void detach_stdio(int ready_fd) {
  const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    close(null);
  }
  if (chdir("/") != 0) { /* mountpoints are absolute or already resolved */
  }
  const char ok = 1;
  if (write(ready_fd, &ok, 1) != 1) { /* the parent is gone; serve anyway */
  }
  close(ready_fd);
}

int run(int argc, char** argv) {
  CLI::App app{"pcifs: PCI devices as files, every access mediated (SPEC S2)", "pcifs"};
  app.set_version_flag("--version", std::string("pcifs ") + PCIFS_VERSION);
  Args a;
  app.add_option("--backend", a.backend,
                 "sim (the embedded default set), sim:FILE.json (simulated devices from a "
                 "file), sysfs (this machine, /sys/bus/pci), sysfs:DIR (a sysfs-shaped tree "
                 "DIR/devices/<BDF>/...)")
      ->capture_default_str();
  app.add_option("--view", a.views,
                 "FILE.json: the policy of one mount (default: every device, config readable "
                 "by all, writes/BARs/power/reset for root). Repeat for several views; each "
                 "then names its own mountpoint")
      ->allow_extra_args(false)  // one file per --view: MOUNTPOINT may follow
      ->check(CLI::ExistingFile);
  app.add_flag("-f", a.foreground, "stay in the foreground and log to stderr (else syslog)");
  app.add_option("-o", a.options,
                 "FUSE mount options, comma-separated (allow_other, default_permissions, ...). "
                 "As root, pcifs adds allow_other: the default view is for every user")
      ->allow_extra_args(false);
  app.add_option("--log-level", a.log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--lock-dir", a.lock_dir,
                 "where daemons lease the real devices they mediate, so that no two pcifs "
                 "daemons ever mediate one device ('none': no leases; simulated devices need none)")
      ->capture_default_str();
  app.add_option("--control", a.control,
                 "serve views at runtime: a root-only control socket for `pcifs view "
                 "add|rm|ls|watch|locks` (--control alone: /run/pcifs/control.sock; else "
                 "--control=PATH); MOUNTPOINT is then optional")
      ->expected(0, 1)
      ->default_str("/run/pcifs/control.sock");
  app.add_option("--state-dir", a.state_dir,
                 "with --control: where runtime views persist, to come back at the next start "
                 "('none': not kept)")
      ->capture_default_str();
  app.add_option("--cdi-dir", a.cdi_dir,
                 "with --control: where one CDI spec per view is written for container engines "
                 "('none': no specs)")
      ->capture_default_str();
  app.add_option("--view-root", a.view_root,
                 "with --control: the directory under which a view that names no mountpoint is "
                 "mounted (ROOT/NAME)")
      ->capture_default_str();
  app.add_option("--doe-timeout", a.doe_timeout_ms,
                 "milliseconds a DOE mailbox may take for each step of an exchange before "
                 "ETIMEDOUT (PCIe 6.0 section 6.30.2: 1 s)")
      ->check(CLI::Range(1u, 60000u))
      ->capture_default_str();
  app.add_option("--max-threads", a.max_threads,
                 "FUSE worker threads per view; a worker never waits for a device operation, "
                 "so any number serves every device (more: more accesses in flight at once)")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--transport", a.transport,
                 "how requests reach the daemon: uring (FUSE over io_uring, Linux 6.14+ with "
                 "/sys/module/fuse/parameters/enable_uring=Y), dev (/dev/fuse), or auto (uring "
                 "where the kernel offers it, else dev; dev with --fd-store)")
      ->check(CLI::IsMember({"auto", "uring", "dev"}))
      ->capture_default_str();
  app.add_flag("--fd-store", a.fd_store,
               "keep each view's FUSE connection in the service manager's file-descriptor "
               "store ($NOTIFY_SOCKET, FDSTORE=1) and hand the mounts over on SIGTERM: the "
               "next start takes them over (LISTEN_FDS) without any caller noticing; needs -f");
  app.add_option("MOUNTPOINT", a.mountpoint,
                 "where to mount (optional with --view files or --control)");
  ToolArgs cdi_args, mp_args;
  add_subcommands(app, cdi_args, mp_args);
  pcifs::control::ViewCli view_cli;
  pcifs::control::add_view_cli(app, view_cli);
  pcifs::control::CdiHookArgs hook_args;
  pcifs::control::add_cdi_hook_subcommand(app, hook_args);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kUsageError;
  }
  if (auto rc = pcifs::control::run_view_cli(app, view_cli)) return *rc;
  if (app.got_subcommand("cdi")) return run_cdi(cdi_args);
  if (app.got_subcommand("mountpoint")) return run_mountpoint(mp_args);
  if (app.got_subcommand("cdi-hook")) return pcifs::control::run_cdi_hook(hook_args, STDIN_FILENO);
  pcifs::fuse::DaemonOptions o;
  o.views = build_views(a);
  o.mount_options = split_options(a.options);
  if (geteuid() == 0) o.mount_options.insert(o.mount_options.begin(), "allow_other");
  o.backend_name = a.backend;
  o.mediator.doe_timeout = std::chrono::milliseconds(a.doe_timeout_ms);
  o.max_threads = a.max_threads;
  if (a.lock_dir != "none") {
    if (a.lock_dir.empty() || a.lock_dir[0] != '/')
      usage_error("--lock-dir: expected an absolute path or none");
    o.lock_dir = a.lock_dir;
  }
  if (!a.control.empty()) host_daemon_options(a, o);
  if (a.fd_store && !a.foreground) {
    usage_error("--fd-store: expected -f (the service manager must see the daemon's own pid)");
  }
  o.fd_store = a.fd_store;
  pcifs::fuse::parse_transport(a.transport, &o.transport);
  if (a.fd_store && o.transport == pcifs::fuse::Transport::kUring) {
    // The kernel resends what a dead daemon read from /dev/fuse
    // (FUSE_NOTIFY_RESEND); a request a dead daemon's ring held is never
    // answered. README "Transports".
    usage_error(
        "--transport=uring: not with --fd-store (a restart cannot recover the requests "
        "a dead daemon's rings held; use --transport=dev or auto)");
  }
  if (a.fd_store) o.transport = pcifs::fuse::Transport::kDev;
  std::string error;
  auto backend = pcifs::backend::open_backend(a.backend, &error);
  if (!backend) usage_error(error);

  int ready_fd = -1;
  if (!a.foreground && daemonize(&ready_fd) != 0) usage_error("cannot fork into the background");
  setup_logging(a.log_level, a.foreground);
  pcifs::fuse::block_stop_signals();
  return pcifs::fuse::serve(std::move(*backend), o, [&](bool ok, const std::string& err) {
    if (!ok) {
      std::fprintf(stderr, "pcifs: %s\n", err.c_str());
    } else if (ready_fd >= 0) {
      detach_stdio(ready_fd);
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pcifs: internal error: %s\n", e.what());
    return 1;
  }
}
