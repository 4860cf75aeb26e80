// The mediation core's façade: everything the FUSE layer calls, keyed by
// (view, caller, device, file). It implements SPEC S3-S13 without FUSE: the
// FUSE adapter decodes a request, resolves the caller, makes ONE call here and
// replies with what comes back.
//
// Ownership: the Mediator owns the per-device state (config mediation tables,
// power state machine, DOE mailboxes, ROM shadow) and the claim table shared by
// all views; it shares the Backend with whoever created it.
//
// Thread safety: every method is safe to call from any thread. read() and
// write() may wait for a running device operation (a power transition or reset
// -- through sysfs an FLR can take about a minute --, a ROM capture, a
// quiesce), and the control writes (power_state, reset, remove, a Command
// write that turns decode off) run one themselves, which waits for the kernel's
// writeback of dirty mapped BAR pages. A FUSE worker must never make such a
// call: it calls try_read()/try_write(), which wait for nothing but their own
// single device access, and makes the waiting call from another thread when
// they answer kWouldWait. DOE responses are delivered asynchronously
// (doe_read), never by parking a thread.
// The RevocationSink is called without any core lock held.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"
#include "pcifs/step_journal.hpp"
#include "pcifs/types.hpp"
#include "pcifs/view.hpp"

namespace pcifs {

// Not an errno a client sees: try_read()/try_write() would have had to wait
// for a device operation other than their own access, and touched nothing.
inline constexpr int kWouldWait = EINPROGRESS;

// What a device file is. Index: BAR number for kBar, mailbox number for kDoe.
enum class FileKind : uint8_t {
  kVendor,
  kDevice,
  kClass,
  kSubsystemVendor,
  kSubsystemDevice,
  kRevision,
  kIrq,
  kNumaNode,
  kResource,  // "resource": the sysfs text
  kConfig,
  kBar,
  kRom,
  kDoe,
  kDoeFeature,
  kPowerState,
  kReset,
  kRemove,
  kOwner,
};

struct FileRef {
  Bdf bdf;
  FileKind kind = FileKind::kConfig;
  uint16_t index = 0;           // kBar: 0..5; kDoe: mailbox
  backend::DoeFeature feature;  // kDoeFeature
};

struct FileEntry {
  std::string name;  // relative to the device directory: "config", "doe_features/0001:00"
  FileRef ref;
  uint32_t mode = 0;  // permission bits, e.g. 0644
  uint64_t size = 0;  // st_size
  // Every file is direct_io: reads reach the daemon with the caller's offset
  // and length (exact widths, S5), and a short read at the end of the ROM's
  // last image does not shrink the kernel's idea of st_size.
  bool direct_io = true;
  bool keep_cache = false;   // rom: the shadow never changes, mapped pages may stay
  bool nonseekable = false;  // doe
};

struct OpenFlags {
  bool read = true;
  bool write = false;
  bool nonblock = false;
};

using ViewId = uint32_t;
using HandleId = uint64_t;

// Called when the Mediator must drop cached pages/mappings of a device's BAR
// files (quiesce, revoke). Never called with a core lock held. The FUSE layer
// implements it with fuse_lowlevel_notify_inval_inode.
class RevocationSink {
 public:
  virtual ~RevocationSink() = default;
  virtual void invalidate_mappings(const Bdf& bdf) = 0;
  // The device left every view (removed): drop its directory entries.
  virtual void device_gone(const Bdf& bdf) { (void)bdf; }
};

// One open handle as a successor daemon needs it to take the handle over
// after a restart (README "Restarts"): the kernel still holds the handle's
// id as the file's fh and sends it with every request.
struct HandleRecord {
  HandleId id = 0;
  std::string view;  // the view's name (ids are per process)
  FileRef ref;
  OpenFlags flags;
  Caller caller;
  bool claiming = false;  // it holds a share of its group's claim
  bool doe_busy = false;  // a DOE request was written; its response is not read to the end
};

// Where the Mediator records its handle table as it changes (the FUSE layer
// keeps it in a memfd that outlives the process: fs/control/restart_state).
// Every method is called with at most Handle::mu held (level 7), must not
// throw, and must not call back into the Mediator.
class HandleJournal {
 public:
  virtual ~HandleJournal() = default;
  virtual void opened(const HandleRecord& r) noexcept = 0;  // before the open is answered
  virtual void confirmed(HandleId id) noexcept = 0;         // the kernel has the handle
  virtual void changed(HandleId id, bool claiming, bool doe_busy) noexcept = 0;
  virtual void released(HandleId id) noexcept = 0;
};

// Cross-daemon leases (fs/core/host_locks.hpp): with a backend whose devices
// other processes can reach (Backend::shared_root), every served, unbound
// device's IOMMU group is leased host-wide; a device whose lease another
// daemon holds is served read-only, like one bound to a driver [S15].
struct HostLockOptions {
  std::string dir;    // where lock files live, e.g. /run/pcifs/locks
  std::string owner;  // what a refused daemon logs: "pid 42, views a,b"
  // The devices some view selects: only those are leased.
  std::function<bool(const backend::DeviceInfo&)> serves;
  // How often a lease another daemon holds is tried again. Once it is free
  // (that daemon ended), the device is mediated here from then on: its
  // read-only state leaves (handles on it end, ENODEV) and it arrives anew.
  std::chrono::milliseconds retry{1000};
};

// What happened to a device, for `pcifs view watch` [S16]. Delivered to the
// event sink without any core lock held, on the thread that made it happen.
struct MediatorEvent {
  enum class Kind : uint8_t {
    kDeviceArrived,
    kDeviceLeft,
    kPower,
    kClaimTaken,
    kClaimReleased,
    kHandedOver,  // detail: the reset method ("flr"), or "failed: EIO"
  };
  Kind kind = Kind::kDeviceArrived;
  Bdf bdf;
  std::string detail;  // kPower: the new state ("D3hot"); claims: the claim key ("group:3")
  pid_t pid = 0;       // claims: the holder
  uid_t uid = 0;
  std::string view;  // claims: the view it was taken through

  static MediatorEvent device(Kind k, const Bdf& b, std::string detail = {}) {
    MediatorEvent e;
    e.kind = k;
    e.bdf = b;
    e.detail = std::move(detail);
    return e;
  }
  static MediatorEvent claim(Kind k, const Bdf& b, std::string group, pid_t pid, uid_t uid,
                             std::string view) {
    MediatorEvent e = device(k, b, std::move(group));
    e.pid = pid;
    e.uid = uid;
    e.view = std::move(view);
    return e;
  }
};
using EventSink = std::function<void(const MediatorEvent&)>;

// One claim, as `pcifs view ls` shows it.
struct ClaimInfo {
  Bdf bdf;
  pid_t pid = 0;
  uid_t uid = 0;
};

// What a view holds now.
struct ViewUsage {
  uint32_t open_handles = 0;
  std::vector<ClaimInfo> claims;
};

struct MediatorOptions {
  // What a client can make the daemon hold [S13]; 0: no bound. An open of
  // `status` keeps a copy of the text until close: EMFILE past the per-uid
  // bound, ENFILE past the total. A DOE exchange holds its request and then
  // its response until read to the end (up to 2^18 dwords each): a write()
  // past either bound fails with EAGAIN (try again once one is read).
  size_t status_opens_per_uid = 16;
  size_t status_opens_total = 256;
  size_t doe_pending_per_uid = 16;
  size_t doe_pending_total = 64;
  unsigned doe_threads = 1;
  std::chrono::milliseconds doe_timeout{1000};
  std::optional<HostLockOptions> host_locks;  // nullopt: no cross-daemon leases
  // Crash hand-over of real devices (pcifs/step_journal.hpp): with host
  // leases, each leased device's physical steps are journaled here, and a
  // record a dead daemon left is recovered at attach. Null: none.
  std::shared_ptr<StepJournal> step_journal;
};

// The text of `status` as one open saw it, and its share of the bound on
// open snapshots (given back when the snapshot is destroyed).
struct StatusSnapshot {
  std::string text;
  std::shared_ptr<void> share;
};

class Mediator {
 public:
  Mediator(std::shared_ptr<backend::Backend> backend, MediatorOptions options = {});
  ~Mediator();
  Mediator(const Mediator&) = delete;
  Mediator& operator=(const Mediator&) = delete;

  ViewId add_view(ViewPolicy policy);
  const ViewPolicy& view(ViewId id) const;
  void set_revocation_sink(RevocationSink* sink);
  // Called for every MediatorEvent from now on (nullptr: none).
  void set_event_sink(EventSink sink);

  // --- Restarts (README "Restarts"). Set before anything is opened.
  void set_handle_journal(HandleJournal* journal);
  // The FUSE layer tells the journal that the open reply reached the kernel:
  // only confirmed handles are taken over (an unanswered open is resent).
  void confirm_open(HandleId h);
  // Takes over a handle the previous daemon journaled, under the same id:
  // its claim is taken again for the same pid (a claim is never lost while
  // its handle is open), and a DOE exchange that was in flight answers its
  // next read with EIO (the exchange died with the old process). ENODEV: the
  // view was removed; ENOENT: the device or file is not in the view (any
  // more); EEXIST: the id is taken. Nothing is journaled anew.
  Result<void> adopt_handle(ViewId view, const HandleRecord& r);
  // New handles get ids >= `first` (ids the old daemon gave out are never reused).
  void reserve_handle_ids(HandleId first);

  // --- Views at runtime [S16].
  // Ends a view for good, as S12's revoke: every handle opened through it is
  // dead (reads and writes ENODEV; its BAR mappings are invalidated, so the
  // next touch faults and gets SIGBUS), its claims end, and its queued or
  // running DOE exchanges are cancelled (a blocked read gets ENODEV). The id
  // is never reused: devices() of it is empty and open() gives ENODEV. The
  // handles stay in the table until release(). Idempotent.
  void remove_view(ViewId id);
  // Waits until the tenant hand-overs of every claim ended so far are done
  // (each resets its group's devices to their clean baseline: handover.hpp).
  // The daemon calls it after ending its views, before unmounting.
  void drain_handovers();
  bool view_removed(ViewId id) const;
  ViewUsage view_usage(ViewId id) const;
  // Why `candidate` may not be added beside the live views: an endpoint it
  // selects shares an IOMMU group with an endpoint that a live view of another
  // uid selects (bridges exempt, as S11), and it does not say
  // share_iommu_group. The text names the group, the devices and the other
  // view. nullopt: no conflict.
  std::optional<std::string> group_conflict(const ViewPolicy& candidate) const;
  // A device's health: "ok", "unresponsive" (its vendor ID reads all-ones),
  // "removed", "bound:DRIVER", "served-elsewhere" (another daemon's host
  // lease), "low-power", "doe-dead". Reads the vendor ID of a device in D0.
  std::string health(const Bdf& bdf) const;
  // Every device the backend has now, with its health.
  std::vector<std::pair<Bdf, std::string>> health_all() const;
  // Every device the backend has now, as it describes it, with its health:
  // the host's inventory for an orchestrator (the control socket's `devices`).
  struct HostDevice {
    backend::DeviceInfo info;
    std::string health;
  };
  std::vector<HostDevice> host_devices() const;

  // --- The tree (S3). Only what the view selects; only files someone in the
  // view can open.
  std::vector<Bdf> devices(ViewId view) const;  // O(devices): listings only
  // Whether the view shows `bdf`: O(log devices), for lookups and getattr.
  bool has_device(ViewId view, const Bdf& bdf) const;
  Result<std::vector<FileEntry>> files(ViewId view, const Bdf& bdf) const;
  Result<FileEntry> stat(ViewId view, const FileRef& ref) const;
  // Whether any view could ever list a file of this name for any device, in
  // any state (`doe_features/` entries aside): any other name is absent for
  // good, and a lookup of it may be answered from the kernel's cache.
  static bool may_name_device_file(std::string_view name);
  // The file of `bdf` a name in its directory stands for, whether or not the
  // view shows it (stat() says), or nullopt for a name that is no file
  // (doe_features, driver, iommu_group, anything else).
  static std::optional<FileRef> device_file_ref(const Bdf& bdf, std::string_view name);
  // iommu_group / driver link targets; nullopt when there is none.
  std::optional<int> iommu_group(ViewId view, const Bdf& bdf) const;
  std::optional<std::string> driver(ViewId view, const Bdf& bdf) const;
  // iommu_groups/ and drivers/ from an index kept as devices come and go: the
  // view's devices in one group or bound to one driver cost O(that set), and
  // whether the view has any O(log devices) plus the devices it skips; the
  // lists of groups and drivers are O(devices), for listings only.
  std::vector<Bdf> group_devices(ViewId view, int group) const;
  std::vector<Bdf> driver_devices(ViewId view, const std::string& driver) const;
  bool has_group(ViewId view, int group) const;
  bool has_driver(ViewId view, const std::string& driver) const;
  std::vector<int> iommu_groups(ViewId view) const;
  std::vector<std::string> drivers(ViewId view) const;

  // --- Files.
  // A claiming open (a BAR) while the group is handed over to its next tenant
  // waits for the hand-over (bounded: EAGAIN after 2 minutes); with `wait`
  // false it answers Errno(kWouldWait) at once instead.
  Result<HandleId> open(ViewId view, const Caller& caller, const FileRef& ref, OpenFlags flags,
                        bool wait = true);
  Result<size_t> read(HandleId h, uint64_t offset, std::span<uint8_t> out);
  Result<size_t> write(HandleId h, uint64_t offset, std::span<const uint8_t> in);
  // The same, for threads that must not wait (FUSE workers): Errno(kWouldWait)
  // at once, before any device access, where read()/write() would wait for a
  // running control operation (transition, reset, capture, quiesce) or would
  // run one (control files, a Command write that changes decode, a wake).
  Result<size_t> try_read(HandleId h, uint64_t offset, std::span<uint8_t> out);
  Result<size_t> try_write(HandleId h, uint64_t offset, std::span<const uint8_t> in);
  void release(HandleId h);

  // --- DOE file (S8). write() queues an exchange; the response is read here.
  // `done` runs exactly once: at once when a response (or error) is ready or the
  // handle is non-blocking (EAGAIN), else from the DOE thread when it is.
  using ReadDone = std::function<void(Result<std::vector<uint8_t>>)>;
  void doe_read(HandleId h, size_t max_bytes, ReadDone done);
  // An interrupted read: its pending `done` gets EINTR; the exchange goes on.
  void doe_interrupt(HandleId h);
  // Poll: bit 0 readable, bit 1 writable. `wake` is called once when it changes.
  unsigned doe_poll(HandleId h, std::function<void()> wake);

  // DOE Discovery runs in the background from the moment a device arrives;
  // doe_features/ (files()) is complete once it has finished on the device's
  // mailboxes. Runs `then` at once when it has (or there is no such device),
  // else on the DOE executor's thread when it ends: each exchange ends by the
  // DOE timeout, or at once when the device goes or the executor shuts down,
  // so `then` may run after every view has stopped. No lock is held. True:
  // `then` has run at once.
  bool when_doe_discovered(const Bdf& bdf, std::function<void()> then);
  // Blocks until Discovery has finished on every mailbox of every device.
  // Nothing needs it to serve; tests use it to start from settled mailboxes.
  void wait_for_discovery();

  // --- status (S3): JSON text for the view's devices.
  std::string status_json(ViewId view) const;
  // status_json() for one open of `status` by `caller`, within the bounds of
  // MediatorOptions (EMFILE: this uid holds status_opens_per_uid already;
  // ENFILE: status_opens_total are held).
  Result<StatusSnapshot> status_snapshot(ViewId view, const Caller& caller) const;

  // For tests and tools: the backend device behind a BDF (nullptr if gone).
  std::shared_ptr<backend::Device> device(const Bdf& bdf) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pcifs
