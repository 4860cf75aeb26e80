// SysfsBackend: the real PCI functions of a sysfs-shaped tree (ROOT/devices/BDF,
// entries being directories or, as on a real system, symlinks into
// /sys/devices/...). SPEC S15, read side.
//
// Enumeration happens in the constructor and in rescan(); devices are kept in
// a map by Bdf, and a Device object lives as long as its function does, so
// handles stay valid across rescans. A kept device is the same function while
// its `config` is the very file it opened (a re-created directory has a new
// one) and its `driver` link names the same driver.
//
// Hot-plug (SPEC S15): a uevent monitor (sysfs/uevent.hpp) listens from
// construction on (netlink when ROOT is on sysfs; ROOT/.pcifs-uevents on a
// temp tree) and its thread starts with the first hot-plug callback. Each PCI
// add/remove/bind/unbind uevent re-examines that one slot (rescan_slot); lost
// uevents (socket overflow) rescan everything. Nothing is polled: a change no
// uevent tells about is seen at the next rescan only.
//
// A driver change (bind/unbind) is a departure and an arrival: DeviceInfo is
// static, and what a user holds was granted for the old owner. Binding a
// driver takes the device from pcifs' users (their handles die with ENODEV,
// their mappings SIGBUS, their claims end) and unbinding gives a fresh, fully
// mediated device, whose config-read handles must be opened again.
//
// Thread safety: every method may be called from any thread. devices() and
// config_read_batch() run concurrently with rescans; rescans (rescan(),
// rescan_slot(), uevents) are serialised, and the callback runs on the
// rescanning thread with no lock a device access or devices() needs held (it
// must not call rescan(), rescan_slot() or set_hotplug_callback() itself).
// set_hotplug_callback() waits for a callback in progress, so once it returns
// the old callback is never called again (its owner may go away).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"
#include "sysfs/sysfs_device.hpp"
#include "sysfs/uevent.hpp"
#include "sysfs/uring_batch.hpp"

namespace pcifs::backend::sysfs {

struct SysfsOptions {
  // Batch reads with plain pread even when io_uring works (benchmarks, tests).
  bool force_pread_batch = false;
  unsigned ring_entries = 64;
  // Wait after a PMCSR transition to or from D3hot (PCI PM 1.2 §5.6.1).
  std::chrono::milliseconds d3hot_delay{10};
  // Follow hot-plug uevents [S15]: from the kernel (netlink) when ROOT is on
  // sysfs, else from datagrams sent to ROOT/.pcifs-uevents. Off: only
  // rescan() and rescan_slot() change the device set.
  bool uevents = true;
  // After an `unbind` uevent the function leaves at once but is looked for
  // again only this much later (or at its next uevent): a removal sends
  // `unbind` then `remove`, and the directory may still be there in between,
  // so re-adding at once would briefly show a dying device as unbound (and
  // run DOE Discovery on it). An administrator's plain unbind shows the
  // device, unbound, after the delay.
  std::chrono::milliseconds unbind_settle{250};
  // Where hot-plug trouble is reported (no uevent socket, a reader that
  // stopped). Empty: "pcifs: ..." on stderr (the backend has no logger).
  std::function<void(const std::string&)> warn;
};

class SysfsBackend final : public Backend {
 public:
  // ROOT is made absolute, so a daemon that changes directory still finds it.
  explicit SysfsBackend(std::string root = "/sys/bus/pci", SysfsOptions options = {});
  // Stops the uevent thread before anything it uses goes away.
  ~SysfsBackend() override;
  // Like the constructor, but ENOENT/ENOTDIR when ROOT/devices is not a directory,
  // so a bad --backend=sysfs:DIR is reported instead of showing nothing.
  static Result<std::unique_ptr<SysfsBackend>> open(std::string root, SysfsOptions options = {});

  std::string describe() const override { return "sysfs:" + root_; }
  std::optional<std::string> shared_root() const override;  // realpath of the root
  std::vector<std::shared_ptr<Device>> devices() override EXCLUDES(mu_);
  void set_hotplug_callback(HotplugFn fn) override EXCLUDES(mu_, rescan_mu_);
  void config_read_batch(std::span<ConfigReadItem> items) override;

  // Re-reads ROOT/devices: keeps devices still present, marks departed ones
  // gone (ENODEV), adds arrivals; then tells the callback (departures first).
  void rescan() EXCLUDES(mu_, rescan_mu_);
  // Re-examines ROOT/devices/BDF only (what a uevent for BDF does): adds it if
  // it appeared, marks it gone if it vanished, replaces it if it is another
  // function or its driver changed; then tells the callback.
  void rescan_slot(const Bdf& bdf) EXCLUDES(mu_, rescan_mu_);
  // Entries of ROOT/devices that could not be read at the last scan, with why
  // ("0000:00:1f.0: ENODEV"). Such devices are not listed.
  std::vector<std::string> skipped() const EXCLUDES(mu_);
  bool batch_uses_uring() const { return batch_.using_uring(); }
  // Where hot-plug comes from ("netlink uevents", "ROOT/.pcifs-uevents"), or
  // "off: why".
  const std::string& hotplug_source() const { return hotplug_source_; }
  // The uevent reader's counters (all zero when hot-plug is off).
  UeventMonitor::Stats uevent_stats() const;

 private:
  struct Scan {
    std::map<Bdf, std::shared_ptr<SysfsDevice>> found;
    std::vector<std::string> skipped;
  };
  Scan scan(const std::map<Bdf, std::shared_ptr<SysfsDevice>>& keep) const;
  void open_uevents();
  void start_uevents();
  void on_uevent(const PciEvent& ev) EXCLUDES(mu_, rescan_mu_);
  // Looks again at slots whose unbind has settled; how long until the next one.
  std::optional<std::chrono::milliseconds> settled() EXCLUDES(mu_, rescan_mu_);
  // rescan_slot() with rescan_mu_ held; may_arrive=false only takes away.
  void slot_changed(const Bdf& bdf, bool may_arrive) REQUIRES(rescan_mu_) EXCLUDES(mu_);
  void warn(const std::string& message) const;

  const std::string root_;
  const SysfsOptions options_;
  UringBatch batch_;
  // Serialises rescans; held across the hot-plug callback (-> the Mediator's
  // attach_mu). Lock order: level 2 (fs/core/mediator_state.hpp).
  Mutex rescan_mu_ ACQUIRED_BEFORE(mu_){"SysfsBackend::rescan_mu_"};
  // Unbound slots to look at again, and when (unbind_settle).
  std::map<Bdf, std::chrono::steady_clock::time_point> settling_ GUARDED_BY(rescan_mu_);
  mutable Mutex mu_{"SysfsBackend::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  std::map<Bdf, std::shared_ptr<SysfsDevice>> devices_ GUARDED_BY(mu_);
  std::vector<std::string> skipped_ GUARDED_BY(mu_);
  HotplugFn hotplug_ GUARDED_BY(mu_);
  std::string hotplug_source_;              // set in the constructor, then read-only
  std::unique_ptr<UeventMonitor> monitor_;  // set in the constructor; null when off
};

}  // namespace pcifs::backend::sysfs
