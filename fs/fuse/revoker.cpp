#include "fuse/revoker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "fuse/inode.hpp"

namespace pcifs::fuse {
namespace {

constexpr uint16_t kBars = 6;

// -ENOENT: the kernel never looked the inode up, so it caches nothing of it.
void check(int rc, const char* what, const Bdf& bdf) {
  if (rc != 0 && rc != -ENOENT) spdlog::warn("{}: {} failed: {}", bdf.str(), what, -rc);
}

}  // namespace

void Revoker::add(fuse_session* se) {
  MutexLock lock(mu_);
  sessions_.push_back(se);
}

void Revoker::remove(fuse_session* se) {
  MutexLock lock(mu_);
  sessions_.erase(std::remove(sessions_.begin(), sessions_.end(), se), sessions_.end());
}

void Revoker::invalidate_mappings(const Bdf& bdf) {
  MutexLock lock(mu_);
  for (fuse_session* se : sessions_) {
    for (uint16_t bar = 0; bar < kBars; ++bar) {
      const auto ino = encode(NodeId::device_file(bdf, FileKind::kBar, bar));
      check(fuse_lowlevel_notify_inval_inode(se, ino, 0, 0), "invalidate mappings", bdf);
    }
  }
}

void Revoker::device_gone(const Bdf& bdf) {
  const std::string name = bdf.str();
  const auto devices = encode(NodeId{Node::kDevicesDir, {}, 0});
  // The rom is the one file whose pages the kernel keeps (keep_cache): inode
  // numbers come from the BDF, so a card that later arrives in the same slot
  // must not be shown the departed one's ROM from the page cache.
  const auto rom = encode(NodeId::device_file(bdf, FileKind::kRom, 0));
  MutexLock lock(mu_);
  for (fuse_session* se : sessions_) {
    check(fuse_lowlevel_notify_inval_inode(se, rom, 0, 0), "invalidate rom", bdf);
    check(fuse_lowlevel_notify_inval_entry(se, devices, name.c_str(), name.size()),
          "invalidate entry", bdf);
  }
}

}  // namespace pcifs::fuse
