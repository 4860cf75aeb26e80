// SysfsDevice: BAR windows (mmap of memory BARs, pread/pwrite of I/O BARs) and
// the expansion ROM.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sysfs/crash_points.hpp"
#include "sysfs/sysfs_device.hpp"

namespace pcifs::backend::sysfs {
namespace {

template <typename T>
uint64_t load(uint8_t* p) {
  return *reinterpret_cast<volatile T*>(p);
}

template <typename T>
void store(uint8_t* p, uint64_t v) {
  *reinterpret_cast<volatile T*>(p) = static_cast<T>(v);
}

// One load of exactly `width` bytes: the register sees one access of that width.
uint64_t load_width(uint8_t* p, unsigned width) {
  switch (width) {
    case 1: return load<uint8_t>(p);
    case 2: return load<uint16_t>(p);
    case 4: return load<uint32_t>(p);
    default: return load<uint64_t>(p);
  }
}

void store_width(uint8_t* p, unsigned width, uint64_t v) {
  switch (width) {
    case 1: store<uint8_t>(p, v); break;
    case 2: store<uint16_t>(p, v); break;
    case 4: store<uint32_t>(p, v); break;
    default: store<uint64_t>(p, v); break;
  }
}

size_t page_round(uint64_t size) {
  auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return static_cast<size_t>((size + page - 1) / page * page);
}

std::string resource_name(unsigned bar) { return "/resource" + std::to_string(bar); }

}  // namespace

Result<void> SysfsDevice::check_bar(unsigned bar, uint64_t offset, unsigned width) const {
  if (bar >= 6 || (width != 1 && width != 2 && width != 4 && width != 8)) return Errno(EINVAL);
  if (offset % width != 0) return Errno(EINVAL);
  uint64_t size = info_.resources[bar].size();
  if (size == 0) return Errno(ENXIO);
  if (offset >= size || size - offset < width) return Errno(ENXIO);
  return Ok();
}

Result<uint8_t*> SysfsDevice::bar_mapping(unsigned bar) {
  MutexLock lock(mu_);
  BarMap& m = maps_[bar];
  if (m.base != nullptr) return m.base;
  UniqueFd fd(::open((dir_ + resource_name(bar)).c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return errno == ENOENT ? vanished_or(Errno(ENXIO)) : syscall_error(errno);
  // sysfs sizes resourceN as the BAR; a shorter file (a hand-made tree) would
  // SIGBUS past its end, so refuse it rather than map it.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return syscall_error(errno);
  if (static_cast<uint64_t>(st.st_size) < info_.resources[bar].size()) return Errno(EIO);
  size_t length = page_round(info_.resources[bar].size());
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return syscall_error(errno);
  // The mapping keeps the file referenced; the descriptor is not needed.
  m = BarMap{static_cast<uint8_t*>(p), length};
  return m.base;
}

Result<int> SysfsDevice::io_fd(unsigned bar) {
  MutexLock lock(mu_);
  UniqueFd& fd = io_fds_[bar];
  if (!fd.valid()) {
    fd.reset(::open((dir_ + resource_name(bar)).c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return errno == ENOENT ? vanished_or(Errno(ENXIO)) : syscall_error(errno);
  }
  return fd.get();
}

Result<uint64_t> SysfsDevice::bar_read(unsigned bar, uint64_t offset, unsigned width) {
  if (gone()) return Errno(ENODEV);
  PCIFS_TRY(check_bar(bar, offset, width));
  if (info_.resources[bar].is_io()) {
    auto fd = io_fd(bar);
    if (!fd) return fd.error();
    uint8_t b[8] = {};
    PCIFS_TRY(pread_exact(*fd, b, width, offset));
    uint64_t v = 0;
    for (unsigned k = 0; k < width; ++k) v |= static_cast<uint64_t>(b[k]) << (8 * k);
    return v;
  }
  auto base = bar_mapping(bar);
  if (!base) return base.error();
  return load_width(*base + offset, width);
}

Result<void> SysfsDevice::bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) {
  if (gone()) return Errno(ENODEV);
  PCIFS_TRY(check_bar(bar, offset, width));
  if (info_.resources[bar].is_io()) {
    auto fd = io_fd(bar);
    if (!fd) return fd.error();
    uint8_t b[8];
    for (unsigned k = 0; k < 8; ++k) b[k] = static_cast<uint8_t>(value >> (8 * k));
    return pwrite_exact(*fd, b, width, offset);
  }
  auto base = bar_mapping(bar);
  if (!base) return base.error();
  store_width(*base + offset, width, value);
  return Ok();
}

Result<void> SysfsDevice::rom_enable(bool on) {
  if (gone()) return Errno(ENODEV);
  // The kernel's rom attribute disables only on a 2-byte write starting with
  // '0' at offset 0; anything else enables.
  PCIFS_TRY(write_attr("rom", on ? "1\n" : "0\n", Errno(ENXIO)));
  if (on) crash_at(CrashPoint::kRomEnabled);
  return Ok();
}

Result<int> SysfsDevice::rom_fd() {
  MutexLock lock(mu_);
  if (!rom_ro_.valid()) {
    rom_ro_.reset(::open((dir_ + "/rom").c_str(), O_RDONLY | O_CLOEXEC));
    if (!rom_ro_.valid()) {
      return errno == ENOENT ? vanished_or(Errno(ENXIO)) : syscall_error(errno);
    }
  }
  return rom_ro_.get();
}

Result<size_t> SysfsDevice::rom_read(uint64_t offset, std::span<uint8_t> out) {
  if (gone()) return Errno(ENODEV);
  auto fd = rom_fd();
  if (!fd) return fd.error();
  size_t done = 0;
  // The kernel returns what it has; loop so a big buffer is filled up to the end.
  while (done < out.size()) {
    ssize_t n =
        ::pread(*fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return syscall_error(errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  crash_at(CrashPoint::kRomRead);
  return done;
}

}  // namespace pcifs::backend::sysfs
