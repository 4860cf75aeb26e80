// `pcifs cdi-hook`: the CDI hook of a view [S16]. Every view's CDI device
// (core/cdi_spec.hpp) carries, besides its bind mount, a createRuntime hook
//   HOOK_BINARY cdi-hook --view NAME --container-path /sys/bus/pci
// that the OCI runtime (runc, crun) runs after it has set up the container's
// mounts and before the container's process starts, with the container's
// state (OCI runtime-spec "State": id, status, pid, bundle, ...) on stdin.
// The hook reads BUNDLE/config.json and refuses the container (exit 1, one
// line on stderr, which podman shows in its error) when
//   - two or more pcifs views are given for the container path: CDI keeps
//     only the last device's mount there (it replaces a mount at the same
//     path), so the container would silently see one view of several. The
//     views' hooks in config.json tell; so do two mounts at the path;
//   - the view's mount is not a live pcifs mount: a daemon that stopped
//     cleanly leaves an empty directory, one that died leaves a dead FUSE
//     mount (ENOTCONN), and either would give the container an empty or
//     dead /sys/bus/pci. A container never starts with one: it fails closed.
//
// Never hanging: the only thing that can block is the file system check on
// a FUSE mount whose daemon is alive but does not answer (stopped, wedged).
// A dead FUSE mount answers at once (ENOTCONN), but a wedged one does not,
// so the check runs in a child process with its stdio on /dev/null (a child
// left behind must not hold the runtime's pipes open, or the runtime would
// wait for it) and is abandoned after a bound, which reads as "not served".
// FUSE requests wait killably, so the abandoned child dies of its SIGKILL.
// Reading stdin is bounded too; the spec's `timeout` is the runtime's
// backstop above all that. (runc 1.1 itself, binding such a mount before any
// hook runs, waits in the kernel until the daemon answers: the hook's bound
// holds where the hook is reached, e.g. a daemon that stops answering after
// the bind.)
//
// The decision (check_container) is a pure function over the texts and a
// checker callback; run_cdi_hook does the I/O. Nothing here keeps state:
// thread-safe except run_bounded and run_cdi_hook, which fork (call them
// from a process with one thread).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "core/cdi_spec.hpp"
#include "pcifs/result.hpp"

namespace CLI {
class App;
}

namespace pcifs::control {

struct CdiHookArgs {
  std::string view;  // the view's CDI device name
  std::string container_path{core::kCdiContainerPath};
};

// How long the file system check of a mount may take before the view counts
// as not served; far above what a live daemon needs (microseconds).
inline constexpr std::chrono::milliseconds kMountCheckBound{2000};
// How long the runtime may take to write the state to stdin and close it.
inline constexpr std::chrono::milliseconds kStateReadBound{5000};

// Says whether SOURCE (a mount's source on the host) is a live pcifs mount:
// "" when it is, else why not ("Transport endpoint is not connected", ...).
using MountCheck = std::function<std::string(const std::string& source)>;

// The bundle directory of an OCI state (the JSON on a hook's stdin).
Result<std::string> oci_state_bundle(std::string_view state_json, std::string* error);

// The verdict over a container's config.json (OCI runtime spec): "" lets it
// start; else the one line that says why not, without a "pcifs: " prefix.
// `live` is asked only about the one mount at the container path.
std::string check_container(const CdiHookArgs& args, std::string_view config_json,
                            const MountCheck& live);

// "/a//b/" -> "/a/b": how a mount destination is compared.
std::string normalise_path(std::string_view path);

// The real MountCheck: statfs(SOURCE) says FUSE (FUSE_SUPER_MAGIC) and
// opendir(SOURCE/devices) succeeds, within `bound` (run_bounded).
std::string check_pcifs_mount(const std::string& source,
                              std::chrono::milliseconds bound = kMountCheckBound);

// Runs `work` in a child process (stdio on /dev/null) and returns what it
// returned; Errno(ETIMEDOUT) when it has not answered within `bound` (the
// child is then killed and not waited for beyond a moment), Errno(EIO) when
// it died without answering, the fork's errno when there is no child.
Result<std::string> run_bounded(const std::function<std::string()>& work,
                                std::chrono::milliseconds bound);

// The hook: reads the state from `state_fd` (bounded), BUNDLE/config.json,
// and decides with check_pcifs_mount. Returns the exit status (0: start,
// 1: refused, with "pcifs: WHY" on stderr).
int run_cdi_hook(const CdiHookArgs& args, int state_fd);

// `pcifs cdi-hook --view NAME [--container-path P]`, filling `args`.
CLI::App* add_cdi_hook_subcommand(CLI::App& app, CdiHookArgs& args);

// This program's absolute path (/proc/self/exe resolved): what `pcifs cdi`
// puts in its hooks. "" when it cannot be read.
std::string self_executable();

}  // namespace pcifs::control
