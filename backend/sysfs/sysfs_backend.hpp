// SysfsBackend: the real PCI functions of a sysfs-shaped tree (ROOT/devices/BDF,
// entries being directories or, as on a real system, symlinks into
// /sys/devices/...). SPEC S15, read side.
//
// Enumeration happens in the constructor and in rescan(); devices are kept in
// a map by Bdf, and a Device object lives as long as its directory does, so
// handles stay valid across rescans. Hot-plug is minimal for now: rescan()
// diffs the directory listing and reports arrivals and departures to the
// hot-plug callback (uevent wiring comes later).
//
// Thread safety: every method may be called from any thread. devices() and
// config_read_batch() run concurrently with rescan(); rescans are serialised,
// and the callback runs on the rescanning thread with no lock a device access
// or devices() needs held (it must not call rescan() itself).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"
#include "sysfs/sysfs_device.hpp"
#include "sysfs/uring_batch.hpp"

namespace pcifs::backend::sysfs {

struct SysfsOptions {
  // Batch reads with plain pread even when io_uring works (benchmarks, tests).
  bool force_pread_batch = false;
  unsigned ring_entries = 64;
  // Wait after a PMCSR transition to or from D3hot (PCI PM 1.2 §5.6.1).
  std::chrono::milliseconds d3hot_delay{10};
};

class SysfsBackend final : public Backend {
 public:
  explicit SysfsBackend(std::string root = "/sys/bus/pci", SysfsOptions options = {});
  // Like the constructor, but ENOENT/ENOTDIR when ROOT/devices is not a directory,
  // so a bad --backend=sysfs:DIR is reported instead of showing nothing.
  static Result<std::unique_ptr<SysfsBackend>> open(std::string root, SysfsOptions options = {});

  std::string describe() const override { return "sysfs:" + root_; }
  std::vector<std::shared_ptr<Device>> devices() override EXCLUDES(mu_);
  void set_hotplug_callback(HotplugFn fn) override EXCLUDES(mu_);
  void config_read_batch(std::span<ConfigReadItem> items) override;

  // Re-reads ROOT/devices: keeps devices still present, marks departed ones
  // gone (ENODEV), adds arrivals; then tells the callback (departures first).
  void rescan() EXCLUDES(mu_, rescan_mu_);
  // Entries of ROOT/devices that could not be read at the last scan, with why
  // ("0000:00:1f.0: ENODEV"). Such devices are not listed.
  std::vector<std::string> skipped() const EXCLUDES(mu_);
  bool batch_uses_uring() const { return batch_.using_uring(); }

 private:
  struct Scan {
    std::map<Bdf, std::shared_ptr<SysfsDevice>> found;
    std::vector<std::string> skipped;
  };
  Scan scan(const std::map<Bdf, std::shared_ptr<SysfsDevice>>& keep) const;

  const std::string root_;
  const SysfsOptions options_;
  UringBatch batch_;
  Mutex rescan_mu_;  // serialises rescans; taken before mu_
  mutable Mutex mu_;
  std::map<Bdf, std::shared_ptr<SysfsDevice>> devices_ GUARDED_BY(mu_);
  std::vector<std::string> skipped_ GUARDED_BY(mu_);
  HotplugFn hotplug_ GUARDED_BY(mu_);
};

}  // namespace pcifs::backend::sysfs
