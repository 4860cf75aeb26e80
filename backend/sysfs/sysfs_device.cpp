// SysfsDevice: enumeration, config space, power and reset. BAR and ROM access
// live in sysfs_device_io.cpp.
#include "sysfs/sysfs_device.hpp"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "sysfs/crash_points.hpp"
#include "sysfs/pm_cap.hpp"
#include "sysfs/sysfs_attrs.hpp"

namespace pcifs::backend::sysfs {
namespace {

bool valid_config_access(uint32_t offset, unsigned width, uint32_t size) {
  if (width != 1 && width != 2 && width != 4) return false;
  return offset % width == 0 && offset < size && size - offset >= width;
}

}  // namespace

Result<std::shared_ptr<SysfsDevice>> SysfsDevice::open(const std::string& dir, const Bdf& bdf,
                                                       std::chrono::milliseconds d3hot_delay) {
  std::string path = dir + "/config";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_from(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_from(errno);
  // Real sysfs says 256 or 4096; a temp tree's file could be anything.
  if (st.st_size < 64 || st.st_size > 4096) return Errno(EIO);
  auto size = static_cast<uint32_t>(st.st_size);
  std::shared_ptr<SysfsDevice> dev(new SysfsDevice(dir, std::move(fd), d3hot_delay));
  uint8_t head[64];
  PCIFS_TRY(dev->pread_exact(dev->config_fd(), head, sizeof head, 0));
  auto info = read_device_info(dir, bdf, head, size);
  if (!info) return info.error();
  dev->info_ = std::move(*info);
  return dev;
}

SysfsDevice::~SysfsDevice() {
  MutexLock lock(mu_);
  for (auto& m : maps_) {
    if (m.base != nullptr) ::munmap(m.base, m.length);
  }
}

bool SysfsDevice::holds_writable_config() const {
  MutexLock lock(mu_);
  return config_rw_.valid();
}

Errno SysfsDevice::vanished_or(Errno otherwise) {
  struct stat st {};
  if (::stat((dir_ + "/config").c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
    mark_gone();
    return Errno(ENODEV);
  }
  return otherwise;
}

Errno SysfsDevice::syscall_error(int e) {
  Errno err = errno_from(e);
  if (err == Errno(ENODEV)) mark_gone();
  return err;
}

Result<void> SysfsDevice::pread_exact(int fd, void* buf, size_t len, uint64_t offset) {
  ssize_t n;
  do {
    n = ::pread(fd, buf, len, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return syscall_error(errno);
  // A short read inside the bounds we checked: the kernel refused part of the
  // range (an unprivileged opener sees 64 bytes of config), never data.
  if (static_cast<size_t>(n) != len) return Errno(EIO);
  return Ok();
}

Result<void> SysfsDevice::pwrite_exact(int fd, const void* buf, size_t len, uint64_t offset) {
  ssize_t n;
  do {
    n = ::pwrite(fd, buf, len, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return syscall_error(errno);
  if (static_cast<size_t>(n) != len) return Errno(EIO);
  return Ok();
}

Result<uint32_t> SysfsDevice::config_read(uint32_t offset, unsigned width) {
  if (gone()) return Errno(ENODEV);
  if (!valid_config_access(offset, width, info_.config_size)) return Errno(EINVAL);
  uint8_t b[4] = {};
  PCIFS_TRY(pread_exact(config_fd(), b, width, offset));
  uint32_t v = 0;
  for (unsigned k = 0; k < width; ++k) v |= static_cast<uint32_t>(b[k]) << (8 * k);
  return v;
}

Result<int> SysfsDevice::config_rw_fd() {
  MutexLock lock(mu_);
  if (!config_rw_.valid()) {
    config_rw_.reset(::open((dir_ + "/config").c_str(), O_RDWR | O_CLOEXEC));
    if (!config_rw_.valid()) return syscall_error(errno);
  }
  return config_rw_.get();
}

Result<void> SysfsDevice::config_write(uint32_t offset, unsigned width, uint32_t value) {
  if (gone()) return Errno(ENODEV);
  if (!valid_config_access(offset, width, info_.config_size)) return Errno(EINVAL);
  auto fd = config_rw_fd();
  if (!fd) return fd.error();
  uint8_t b[4];
  for (unsigned k = 0; k < 4; ++k) b[k] = static_cast<uint8_t>(value >> (8 * k));
  PCIFS_TRY(pwrite_exact(*fd, b, width, offset));
  if (offset <= PCI_COMMAND && offset + width > PCI_COMMAND) restoring_.store(false);
  if (offset >= PCI_BASE_ADDRESS_0 && offset <= PCI_BASE_ADDRESS_5 && restoring_.exchange(false)) {
    crash_at(CrashPoint::kMidRestore);
  }
  return Ok();
}

Result<void> SysfsDevice::check_block(uint32_t offset, size_t length) const {
  if (offset > info_.config_size || length > info_.config_size - offset) return Errno(EINVAL);
  return Ok();
}

Result<void> SysfsDevice::config_read_block(uint32_t offset, std::span<uint8_t> out) {
  if (gone()) return Errno(ENODEV);
  PCIFS_TRY(check_block(offset, out.size()));
  if (out.empty()) return Ok();
  return pread_exact(config_fd(), out.data(), out.size(), offset);
}

Result<void> SysfsDevice::set_power_state(PowerState target) {
  if (gone()) return Errno(ENODEV);
  if (target == PowerState::kD3cold) return Errno(EOPNOTSUPP);  // needs platform (ACPI) power
  uint8_t cfg[256];
  PCIFS_TRY(config_read_block(0, cfg));
  auto pm = find_pm_capability(cfg);
  if (!pm) return Errno(EOPNOTSUPP);
  uint32_t pmcsr_off = *pm + PCI_PM_CTRL;
  auto pmcsr = config_read(pmcsr_off, 2);
  if (!pmcsr) return pmcsr.error();
  uint32_t want = target == PowerState::kD0 ? 0u : 3u;  // PMCSR PowerState: D0 = 0, D3hot = 3
  uint32_t now = *pmcsr & PCI_PM_CTRL_STATE_MASK;
  if (now == want) return Ok();
  // PME_Status is RW1C: writing back the 1 we read would clear it for the driver.
  constexpr uint32_t kKeep = ~uint32_t{PCI_PM_CTRL_STATE_MASK | PCI_PM_CTRL_PME_STATUS};
  uint32_t value = (*pmcsr & kKeep) | want;
  if (want == 3) crash_at(CrashPoint::kBeforeD3hot);
  PCIFS_TRY(config_write(pmcsr_off, 2, value));
  if (want == 3) crash_at(CrashPoint::kAfterD3hot);
  if (now == 3) {  // D3hot -> D0: the core's restore follows (crash_points.hpp)
    restoring_.store(true);
    crash_at(CrashPoint::kAfterD0);
  }
  if (now == 3 || want == 3) std::this_thread::sleep_for(d3hot_delay_);
  return Ok();
}

Result<void> SysfsDevice::write_attr(const char* name, std::string_view text, Errno if_absent) {
  // Opened per call: no writable descriptor outlives the operation.
  UniqueFd fd(::open((dir_ + "/" + name).c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno == ENOENT ? vanished_or(if_absent) : syscall_error(errno);
  return pwrite_exact(fd.get(), text.data(), text.size(), 0);
}

Result<void> SysfsDevice::reset() {
  if (gone()) return Errno(ENODEV);
  PCIFS_TRY(write_attr("reset", "1\n", Errno(EOPNOTSUPP)));
  crash_at(CrashPoint::kAfterReset);
  return Ok();
}

}  // namespace pcifs::backend::sysfs
