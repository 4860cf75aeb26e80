// The CDI hook of a view (cdi_hook.hpp).
#include "control/cdi_hook.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

namespace pcifs::control {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxState = size_t{1} << 20;  // an OCI state is a few hundred bytes
constexpr char kAnswered = '.';                // the child's answer starts with it

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<long>(left.count(), INT_MAX));
}

// Reads `fd` to EOF, waiting at most until `deadline`. ETIMEDOUT when the
// writer neither finished nor closed in time; E2BIG past `limit` bytes.
Result<std::string> read_until(int fd, Clock::time_point deadline, size_t limit) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno(errno);
    if (r == 0) return Errno(ETIMEDOUT);
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return Errno(errno);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) return Errno(E2BIG);
  }
}

// The `--view` of every pcifs hook in the config whose --container-path is
// `where`: the names of the views that mount there.
std::vector<std::string> hooked_views(const json& config, const std::string& where) {
  std::vector<std::string> names;
  if (!config.contains("hooks") || !config["hooks"].is_object()) return names;
  for (const auto& [stage, hooks] : config["hooks"].items()) {
    if (!hooks.is_array()) continue;
    for (const auto& h : hooks) {
      const json args = h.is_object() ? h.value("args", json::array()) : json::array();
      if (!args.is_array() || args.size() < 2 || !args[1].is_string() ||
          args[1].get<std::string>() != core::kCdiHookCommand) {
        continue;
      }
      std::string view, path(core::kCdiContainerPath);
      for (size_t i = 2; i + 1 < args.size(); ++i) {
        if (!args[i].is_string() || !args[i + 1].is_string()) continue;
        if (args[i] == "--view") view = args[i + 1].get<std::string>();
        if (args[i] == "--container-path") path = args[i + 1].get<std::string>();
      }
      if (!view.empty() && normalise_path(path) == where &&
          std::find(names.begin(), names.end(), view) == names.end()) {
        names.push_back(view);
      }
    }
  }
  return names;
}

// Two or more pcifs views for one path. CDI applies a device's mount by
// first removing any mount at the same container path (the reference
// library's ContainerEdits.Apply), so config.json holds the last view's mount
// alone: only the views' hooks tell that there were several.
std::string several_views(const std::string& where, const std::vector<std::string>& views) {
  return "container has " + std::to_string(views.size()) + " pcifs views at " + where + " (" +
         join(views) +
         "), and only the last would be mounted: one view per container; make a view with all "
         "their devices instead";
}

// Two or more mounts on the container path, not all of them views.
std::string several_mounts(const CdiHookArgs& a, const std::string& where,
                           const std::vector<std::string>& sources) {
  return "container mounts " + std::to_string(sources.size()) + " file systems at " + where + " (" +
         join(sources) + "), view " + a.view + " among them: a view must be the only mount there";
}

// What the child of check_pcifs_mount finds: "" for a live pcifs mount.
std::string probe_mount(const std::string& source) {
  struct statfs st {};
  if (::statfs(source.c_str(), &st) != 0) return source + ": " + std::strerror(errno);
  if (static_cast<unsigned long>(st.f_type) != FUSE_SUPER_MAGIC) {
    return source + " is not a FUSE mount (no daemon serves it)";
  }
  const std::string devices = source + "/devices";
  DIR* d = ::opendir(devices.c_str());
  if (d == nullptr) return devices + ": " + std::strerror(errno);
  ::closedir(d);
  return "";
}

// The child of run_bounded: stdio on /dev/null, the answer on `fd`.
[[noreturn]] void child(const std::function<std::string()>& work, int fd) {
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    for (int i = 0; i < 3; ++i) ::dup2(null, i);
  }
  const std::string answer = kAnswered + work();
  size_t done = 0;
  while (done < answer.size()) {
    const ssize_t n = ::write(fd, answer.data() + done, answer.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::_exit(0);
}

// Reaps `pid` if it exits within a moment; a child stuck past its SIGKILL
// (it cannot be, on FUSE: its waits are killable) is left to init.
void reap(pid_t pid) {
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) != 0) return;
    ::usleep(2000);
  }
}

}  // namespace

std::string normalise_path(std::string_view path) {
  std::string out;
  for (const char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

Result<std::string> oci_state_bundle(std::string_view state_json, std::string* error) {
  const json state = json::parse(state_json, nullptr, false);
  if (state.is_discarded() || !state.is_object()) {
    if (error) *error = "the OCI state on stdin is not a JSON object";
    return Errno(EINVAL);
  }
  if (!state.contains("bundle") || !state["bundle"].is_string() || state["bundle"] == "") {
    if (error) *error = "the OCI state on stdin has no \"bundle\"";
    return Errno(EINVAL);
  }
  return state["bundle"].get<std::string>();
}

std::string check_container(const CdiHookArgs& a, std::string_view config_json,
                            const MountCheck& live) {
  const json config = json::parse(config_json, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return "view " + a.view + ": the container's config.json is not a JSON object";
  }
  const std::string where = normalise_path(a.container_path);
  std::vector<std::string> sources;
  if (config.contains("mounts") && config["mounts"].is_array()) {
    for (const auto& m : config["mounts"]) {
      if (!m.is_object() || !m.contains("destination") || !m["destination"].is_string()) continue;
      if (normalise_path(m["destination"].get<std::string>()) != where) continue;
      sources.push_back(m.value("source", std::string()));
    }
  }
  const std::vector<std::string> views = hooked_views(config, where);
  if (views.size() > 1) return several_views(where, views);
  if (sources.size() > 1) return several_mounts(a, where, sources);
  if (sources.empty()) {
    return "view " + a.view + " has no mount at " + where + " in the container's config.json";
  }
  const std::string why = live(sources[0]);
  if (why.empty()) return "";
  return "view " + a.view + " is not served (" + why + "): start its daemon before the container";
}

Result<std::string> run_bounded(const std::function<std::string()>& work,
                                std::chrono::milliseconds bound) {
  const auto deadline = Clock::now() + bound;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Errno(errno);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Errno(err);
  }
  if (pid == 0) {
    ::close(fds[0]);
    child(work, fds[1]);
  }
  ::close(fds[1]);
  auto answer = read_until(fds[0], deadline, kMaxState);
  ::close(fds[0]);
  if (!answer) {
    ::kill(pid, SIGKILL);
    reap(pid);
    return answer.error();
  }
  ::waitpid(pid, nullptr, 0);  // it closed its end: it is exiting
  if (answer->empty() || (*answer)[0] != kAnswered) return Errno(EIO);
  return answer->substr(1);
}

std::string check_pcifs_mount(const std::string& source, std::chrono::milliseconds bound) {
  auto r = run_bounded([&] { return probe_mount(source); }, bound);
  if (r) return *r;
  if (r.error() == Errno(ETIMEDOUT)) {
    return source + " does not answer within " + std::to_string(bound.count()) + " ms";
  }
  return source + ": cannot check (" + std::strerror(r.error().value()) + ")";
}

int run_cdi_hook(const CdiHookArgs& args, int state_fd) {
  auto refuse = [&](const std::string& why) {
    std::fprintf(stderr, "pcifs: %s\n", why.c_str());
    return 1;
  };
  auto state = read_until(state_fd, Clock::now() + kStateReadBound, kMaxState);
  if (!state) {
    return refuse("view " + args.view + ": cannot read the OCI state on stdin (" +
                  std::strerror(state.error().value()) + ")");
  }
  std::string error;
  auto bundle = oci_state_bundle(*state, &error);
  if (!bundle) return refuse("view " + args.view + ": " + error);
  const std::string path = *bundle + "/config.json";
  std::ifstream in(path);
  std::stringstream config;
  config << in.rdbuf();
  if (!in) return refuse("view " + args.view + ": cannot read " + path);
  const std::string why = check_container(
      args, config.str(), [](const std::string& s) { return check_pcifs_mount(s); });
  return why.empty() ? 0 : refuse(why);
}

CLI::App* add_cdi_hook_subcommand(CLI::App& app, CdiHookArgs& args) {
  auto* hook = app.add_subcommand(
      std::string(core::kCdiHookCommand),
      "the CDI hook of a view, run by the container runtime (createRuntime) with the OCI state "
      "on stdin: exit 1 unless the container mounts exactly one file system at the container "
      "path and it is the view's live pcifs mount");
  hook->add_option("--view", args.view, "the view's CDI device name (for messages)")->required();
  hook->add_option("--container-path", args.container_path, "where the view is mounted")
      ->capture_default_str();
  return hook;
}

std::string self_executable() {
  std::vector<char> buf(PATH_MAX + 1);
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  return std::string(buf.data(), static_cast<size_t>(n));
}

}  // namespace pcifs::control
