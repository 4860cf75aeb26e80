#include "core/host_locks.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

namespace pcifs::core {

class HostLease {
 public:
  HostLease(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~HostLease() {
    ::unlink(path_.c_str());  // while still locked: see the header
    ::close(fd_);
  }
  HostLease(const HostLease&) = delete;
  HostLease& operator=(const HostLease&) = delete;

 private:
  int fd_;
  std::string path_;
};

namespace {

constexpr size_t kMaxReadableName = 96;
constexpr int kAttempts = 8;  // each retry means a holder let go meanwhile

// Letters, digits, '.' and '_' kept; everything else becomes '-'. A long root
// (a temp tree) is named by its FNV-1a hash instead.
std::string file_part(const std::string& s) {
  if (s.size() > kMaxReadableName) {
    uint64_t h = 14695981039346656037ull;
    for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    char buf[24];
    std::snprintf(buf, sizeof buf, "h%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
  std::string out;
  for (char c : s) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_';
    out += keep ? c : '-';
  }
  return out;
}

std::string read_holder(int fd) {
  char buf[256];
  const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

std::string failure(const std::string& what, const std::string& path, int err) {
  return what + " " + path + ": " + std::strerror(err);
}

}  // namespace

HostLocks::HostLocks(std::string dir, std::string root, std::string owner)
    : dir_(std::move(dir)), root_(std::move(root)), owner_(std::move(owner)) {}

std::string HostLocks::path_of(const std::string& key) const {
  return dir_ + "/" + file_part(root_) + "." + file_part(key) + ".lock";
}

HostLocks::Outcome HostLocks::acquire(const std::string& key) {
  MutexLock lock(mu_);
  if (auto lease = held_[key].lock()) return {lease, std::nullopt, std::nullopt};
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return {nullptr, std::nullopt, "cannot create " + dir_ + ": " + ec.message()};
  const std::string path = path_of(key);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return {nullptr, std::nullopt, failure("cannot open", path, errno)};
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err != EWOULDBLOCK) {
        ::close(fd);
        return {nullptr, std::nullopt, failure("cannot lock", path, err)};
      }
      std::string holder = read_holder(fd);
      ::close(fd);
      return {nullptr, std::move(holder), std::nullopt};
    }
    struct stat mine {};
    struct stat at_path {};
    if (::fstat(fd, &mine) != 0 || ::stat(path.c_str(), &at_path) != 0 ||
        mine.st_ino != at_path.st_ino || mine.st_dev != at_path.st_dev) {
      ::close(fd);  // the holder unlinked it between our open and our lock
      continue;
    }
    const std::string text = owner_ + "\n";
    const bool named = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, text.data(), text.size(), 0) ==
                                                      static_cast<ssize_t>(text.size());
    (void)named;  // held all the same: only the holder's name would be missing for others
    auto lease = std::make_shared<HostLease>(fd, path);
    held_[key] = lease;
    return {lease, std::nullopt, std::nullopt};
  }
  return {nullptr, std::nullopt,
          "cannot keep " + path + ": it is replaced as fast as it is locked"};
}

}  // namespace pcifs::core
