// Hot-plug input for the sysfs backend (SPEC S15): kernel uevents, parsed and
// delivered to a handler by one reader thread.
//
// A uevent datagram is what the kernel multicasts on NETLINK_KOBJECT_UEVENT:
// "ACTION@DEVPATH\0" then "KEY=VALUE\0" fields (ACTION, DEVPATH, SUBSYSTEM,
// SEQNUM, and for PCI devices PCI_SLOT_NAME ...). udev re-broadcasts its own
// "libudev"-framed messages on another group; those are not ours and are
// ignored. The same bytes may come from two sources:
//   - the kernel, on a netlink socket (ROOT is the real /sys/bus/pci): only
//     messages whose sender is the kernel (nl_pid 0, uid 0) are believed;
//   - a local AF_UNIX datagram socket bound at ROOT/.pcifs-uevents (ROOT is a
//     sysfs-shaped temp tree): whoever drives the tree (a test) sends the very
//     datagrams the kernel would; only the daemon's own uid or root is believed.
// Either way the same parser, the same handler and the same rescan path run.
//
// Ownership: a UeventMonitor owns its source's descriptor (and the unix
// socket's path, unlinked when the monitor goes away if it is still ours).
// Thread safety: parse_uevent() and pci_event() are pure. UeventMonitor's
// start()/stop()/stats() may be called from any thread, but not from inside a
// handler (stop() joins the thread the handler runs on).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"
#include "pcifs/types.hpp"
#include "sysfs/unique_fd.hpp"

namespace pcifs::backend::sysfs {

// The fields of one kernel uevent that pcifs looks at.
struct Uevent {
  std::string action;     // "add", "remove", "bind", "unbind", "change", ...
  std::string devpath;    // "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0"
  std::string subsystem;  // "pci"
  std::string slot;       // PCI_SLOT_NAME ("0000:01:00.0"); empty when absent
};

// Largest datagram believed: the kernel's UEVENT_BUFFER_SIZE (2048) of
// environment plus the "ACTION@DEVPATH" header (DEVPATH is at most a page).
inline constexpr size_t kMaxUeventSize = 8192;

// One kernel-format datagram -> its fields, or nullopt for anything else:
// "libudev" messages, a missing final NUL (truncated), a header without '@',
// a field without '=', an empty field, ACTION/DEVPATH disagreeing with the
// header, a repeated key pcifs reads, a missing SUBSYSTEM.
std::optional<Uevent> parse_uevent(std::string_view datagram);

enum class PciAction : uint8_t { kAdd, kRemove, kBind, kUnbind };

// A hot-plug fact about one PCI function.
struct PciEvent {
  PciAction action = PciAction::kAdd;
  Bdf bdf;
};

// The PCI event a uevent stands for: SUBSYSTEM=pci, ACTION add/remove/bind/
// unbind, and a slot (PCI_SLOT_NAME, else DEVPATH's last component) that is a
// BDF. Everything else (other subsystems, "change", drivers' own kobjects) is
// nullopt.
std::optional<PciEvent> pci_event(const Uevent& ev);

// "EADDRINUSE": the symbolic name of any errno (Errno::name() knows only the
// ones the mount returns), for messages.
std::string errno_text(Errno e);

// Whose datagrams a source believes.
enum class UeventSender : uint8_t {
  kKernel,  // netlink: nl_pid 0 and uid 0
  kLocal,   // unix socket: this process's effective uid, or root
};

// A readable datagram socket with SO_PASSCRED on, and whom to believe on it.
struct UeventSource {
  UniqueFd fd;
  UeventSender sender = UeventSender::kLocal;
  std::string path;  // the unix socket's path (unlinked by the monitor); "" otherwise
  dev_t path_dev = 0;
  ino_t path_ino = 0;
  std::string name;  // for messages: "netlink" or the socket's path
};

// A NETLINK_KOBJECT_UEVENT socket on the kernel's multicast group 1. Needs no
// privilege (the kernel lets anyone listen); only reads.
Result<UeventSource> open_kernel_uevents();
// An AF_UNIX SOCK_DGRAM socket bound at `path`, mode 0600. A stale socket
// there (nobody bound to it) is replaced; a live one is EADDRINUSE (another
// daemon serves this tree); anything that is not a socket is left alone
// (EEXIST). ENAMETOOLONG when the path does not fit in sun_path.
Result<UeventSource> open_local_uevents(const std::string& path);

class UeventMonitor {
 public:
  // Runs on the monitor thread for each believed PCI event, in arrival order.
  using EventFn = std::function<void(const PciEvent&)>;
  // Runs on the monitor thread when events were lost (the socket's buffer
  // overflowed: ENOBUFS): the receiver must rescan everything.
  using LostFn = std::function<void()>;
  // Runs on the monitor thread when it ends by itself (a socket error).
  using StoppedFn = std::function<void(const std::string& why)>;
  // Runs on the monitor thread after every burst of datagrams, and once the
  // delay it last returned has passed with nothing to read: deferred work.
  // Returns how long until it wants to run again (nullopt: no sooner than
  // after the next datagram).
  using TimerFn = std::function<std::optional<std::chrono::milliseconds>()>;

  struct Stats {
    uint64_t datagrams = 0;       // read from the socket
    uint64_t untrusted = 0;       // dropped: wrong sender, no credentials, or fds attached
    uint64_t malformed = 0;       // dropped: truncated or not kernel-format
    uint64_t ignored = 0;         // well-formed but not a PCI hot-plug event
    uint64_t delivered = 0;       // handed to EventFn
    uint64_t overflows = 0;       // ENOBUFS seen (LostFn called)
    uint64_t handler_errors = 0;  // a handler threw: logged, then LostFn (rescan)
    bool running = false;         // the thread is reading
    std::string stopped_why;      // why the thread ended by itself ("" while fine)
  };

  explicit UeventMonitor(UeventSource source);
  ~UeventMonitor();  // stop(), then unlink the unix socket if it is still ours
  UeventMonitor(const UeventMonitor&) = delete;
  UeventMonitor& operator=(const UeventMonitor&) = delete;

  // Starts the reader thread; datagrams queued before it are read then. Only
  // the first call starts anything. Fails if the thread or the stop eventfd
  // cannot be made.
  Result<void> start(EventFn on_event, LostFn on_lost, StoppedFn on_stopped = {},
                     TimerFn on_timer = {}) EXCLUDES(mu_);
  // Ends the thread and waits for it (a handler in progress finishes first).
  // Idempotent. Never from a handler.
  void stop() EXCLUDES(mu_);
  Stats stats() const EXCLUDES(mu_);
  const std::string& name() const { return source_.name; }

 private:
  // Runs one handler: a throw is counted, logged (rate-limited) and
  // swallowed, so the thread goes on. False if it threw.
  template <typename F>
  bool call(const char* what, F&& f) noexcept EXCLUDES(mu_);
  // The thread's loop; returns the reason it ended by itself ("" for stop()).
  std::string run(const EventFn& on_event, const LostFn& on_lost, const TimerFn& on_timer);
  // One datagram: the believed PCI event in it, if any (counts the rest).
  std::optional<PciEvent> receive(bool* lost, bool* again, int* error);
  bool trusted(const void* name, size_t name_len, bool has_cred, uid_t uid) const;
  void count(uint64_t Stats::*field) EXCLUDES(mu_);

  UeventSource source_;
  UniqueFd stop_fd_;                        // eventfd: written by stop(), polled by the thread
  mutable Mutex mu_{"UeventMonitor::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  std::thread thread_ GUARDED_BY(mu_);
  bool started_ GUARDED_BY(mu_) = false;
  Stats stats_ GUARDED_BY(mu_);
  // Handler-failure lines: at most one a second (+ how many were dropped).
  std::chrono::steady_clock::time_point last_report_ GUARDED_BY(mu_){};
  uint64_t unreported_ GUARDED_BY(mu_) = 0;
};

}  // namespace pcifs::backend::sysfs
