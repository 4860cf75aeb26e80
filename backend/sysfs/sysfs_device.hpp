// One real PCI function reached through its sysfs directory (DIR = ROOT/devices/BDF).
//
// Config space: `config` is opened read-only when the device is enumerated and
// kept; a writable descriptor is opened only on the first config write, so a
// read-only user never holds one on real sysfs. Memory BARs are mmap(MAP_SHARED)
// of `resourceN`, mapped on first access and kept until the device is destroyed;
// each access is one volatile load or store of exactly the requested width.
// I/O BARs are pread/pwrite of `resourceN`. `rom` and `reset` are written the
// way `echo` would ("1\n", "0\n": the kernel only disables the ROM for exactly
// two bytes starting with '0').
//
// Ownership: SysfsBackend creates devices and hands out shared_ptrs; a device
// owns its descriptors and mappings. Once mark_gone() is called (its directory
// vanished) every access fails with ENODEV, and the device never comes back: a
// reappearing BDF is a new SysfsDevice.
//
// Thread safety: every method may be called concurrently. Lazily opened
// descriptors and mappings are guarded by an internal mutex, taken only to find
// them; the accesses themselves run unlocked (the kernel serialises config
// accesses per bus, and a BAR register access is a single load or store).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "pcifs/backend.hpp"
#include "pcifs/sync.hpp"
#include "sysfs/unique_fd.hpp"

namespace pcifs::backend::sysfs {

class SysfsDevice final : public Device {
 public:
  // Opens DIR/config read-only and reads the attributes. `d3hot_delay` is
  // waited after each PMCSR transition to or from D3hot (PCI PM 1.2 §5.6.1:
  // 10 ms); tests on temp trees pass 0.
  static Result<std::shared_ptr<SysfsDevice>> open(const std::string& dir, const Bdf& bdf,
                                                   std::chrono::milliseconds d3hot_delay);
  ~SysfsDevice() override;

  const DeviceInfo& info() const override { return info_; }
  Result<uint32_t> config_read(uint32_t offset, unsigned width) override;
  Result<void> config_write(uint32_t offset, unsigned width, uint32_t value) override;
  Result<void> config_read_block(uint32_t offset, std::span<uint8_t> out) override;
  Result<uint64_t> bar_read(unsigned bar, uint64_t offset, unsigned width) override;
  Result<void> bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) override;
  Result<void> rom_enable(bool on) override;
  Result<size_t> rom_read(uint64_t offset, std::span<uint8_t> out) override;
  Result<void> set_power_state(PowerState target) override;
  Result<void> reset() override;
  Result<void> remove() override { return Errno(EOPNOTSUPP); }  // pcifs never removes real devices

  // The device's directory vanished: fail everything with ENODEV from now on.
  void mark_gone() { gone_.store(true, std::memory_order_release); }
  bool gone() const { return gone_.load(std::memory_order_acquire); }
  const std::string& dir() const { return dir_; }
  // Read-only `config` descriptor, valid for the device's lifetime (for batches).
  int config_fd() const { return config_ro_.get(); }
  // Whether a writable config descriptor has been opened (tests: read-only users
  // must never cause one).
  bool holds_writable_config() const;
  // Checks a block read's bounds: EINVAL outside [0, config_size).
  Result<void> check_block(uint32_t offset, size_t length) const;
  // ENODEV and mark_gone() if the directory no longer exists, else `otherwise`.
  Errno vanished_or(Errno otherwise);
  // Maps a failed syscall's errno, marking the device gone on ENOENT/ENODEV.
  Errno syscall_error(int e);

 private:
  struct BarMap {
    uint8_t* base = nullptr;
    size_t length = 0;
  };
  SysfsDevice(std::string dir, UniqueFd config_ro, std::chrono::milliseconds d3hot_delay)
      : dir_(std::move(dir)), config_ro_(std::move(config_ro)), d3hot_delay_(d3hot_delay) {}

  Result<void> check_bar(unsigned bar, uint64_t offset, unsigned width) const;
  Result<int> config_rw_fd() EXCLUDES(mu_);
  Result<int> io_fd(unsigned bar) EXCLUDES(mu_);
  Result<int> rom_fd() EXCLUDES(mu_);
  Result<uint8_t*> bar_mapping(unsigned bar) EXCLUDES(mu_);
  Result<void> write_attr(const char* name, std::string_view text, Errno if_absent);
  Result<void> pread_exact(int fd, void* buf, size_t len, uint64_t offset);
  Result<void> pwrite_exact(int fd, const void* buf, size_t len, uint64_t offset);

  const std::string dir_;
  const UniqueFd config_ro_;
  const std::chrono::milliseconds d3hot_delay_;
  DeviceInfo info_;  // written once in open(), then read-only
  std::atomic<bool> gone_{false};
  // Between a D3hot -> D0 write and the next Command write: the core is
  // restoring config (the mid-restore failpoint, crash_points.hpp).
  std::atomic<bool> restoring_{false};

  mutable Mutex mu_{"SysfsDevice::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  UniqueFd config_rw_ GUARDED_BY(mu_);
  UniqueFd rom_ro_ GUARDED_BY(mu_);
  std::array<UniqueFd, 6> io_fds_ GUARDED_BY(mu_);
  std::array<BarMap, 6> maps_ GUARDED_BY(mu_);
};

}  // namespace pcifs::backend::sysfs
