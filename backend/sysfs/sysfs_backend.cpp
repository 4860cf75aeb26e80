#include "sysfs/sysfs_backend.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <utility>

namespace pcifs::backend::sysfs {
namespace {

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

// A kept device is still the same function if it was not seen vanishing and
// its directory is there. (A remove + re-add between two rescans is not
// noticed; uevents will tell, in the hot-plug issue.)
bool still_same(const SysfsDevice& dev) {
  struct stat st {};
  return !dev.gone() && ::stat((dev.dir() + "/config").c_str(), &st) == 0;
}

}  // namespace

SysfsBackend::SysfsBackend(std::string root, SysfsOptions options)
    : root_(std::move(root)),
      options_(options),
      batch_(options.ring_entries, options.force_pread_batch) {
  Scan s = scan({});
  MutexLock lock(mu_);
  devices_ = std::move(s.found);
  skipped_ = std::move(s.skipped);
}

Result<std::unique_ptr<SysfsBackend>> SysfsBackend::open(std::string root, SysfsOptions options) {
  struct stat st {};
  if (::stat((root + "/devices").c_str(), &st) != 0) return Errno(errno > 0 ? errno : ENOENT);
  if (!S_ISDIR(st.st_mode)) return Errno(ENOTDIR);
  return std::make_unique<SysfsBackend>(std::move(root), options);
}

SysfsBackend::Scan SysfsBackend::scan(
    const std::map<Bdf, std::shared_ptr<SysfsDevice>>& keep) const {
  Scan s;
  std::string devdir = root_ + "/devices";
  for (const std::string& name : list_dir(devdir)) {
    auto bdf = Bdf::parse(name);
    if (!bdf) continue;  // not a function (stray file in a hand-made tree)
    auto old = keep.find(*bdf);
    if (old != keep.end() && still_same(*old->second)) {
      s.found.emplace(*bdf, old->second);
      continue;
    }
    std::string path = devdir;
    path += '/';
    path += name;
    auto dev = SysfsDevice::open(path, *bdf, options_.d3hot_delay);
    if (!dev) {
      s.skipped.push_back(name + ": " + std::string(dev.error().name()));
      continue;
    }
    s.found.emplace(*bdf, std::move(*dev));
  }
  return s;
}

std::vector<std::shared_ptr<Device>> SysfsBackend::devices() {
  MutexLock lock(mu_);
  std::vector<std::shared_ptr<Device>> out;
  out.reserve(devices_.size());
  for (auto& [bdf, dev] : devices_) out.push_back(dev);  // std::map: sorted by Bdf
  return out;
}

void SysfsBackend::set_hotplug_callback(HotplugFn fn) {
  MutexLock lock(mu_);
  hotplug_ = std::move(fn);
}

std::vector<std::string> SysfsBackend::skipped() const {
  MutexLock lock(mu_);
  return skipped_;
}

void SysfsBackend::rescan() {
  MutexLock serial(rescan_mu_);
  std::map<Bdf, std::shared_ptr<SysfsDevice>> old;
  {
    MutexLock lock(mu_);
    old = devices_;
  }
  // Scanning touches the filesystem: done without mu_ so devices() stays fast.
  Scan s = scan(old);
  std::vector<std::pair<Bdf, bool>> events;
  for (auto& [bdf, dev] : old) {
    auto it = s.found.find(bdf);
    if (it != s.found.end() && it->second == dev) continue;
    dev->mark_gone();
    events.emplace_back(bdf, false);
  }
  for (auto& [bdf, dev] : s.found) {
    auto it = old.find(bdf);
    if (it == old.end() || it->second != dev) events.emplace_back(bdf, true);
  }
  HotplugFn fn;
  {
    MutexLock lock(mu_);
    devices_ = std::move(s.found);
    skipped_ = std::move(s.skipped);
    fn = hotplug_;
  }
  if (!fn) return;
  for (auto& [bdf, added] : events) fn(bdf, added);
}

void SysfsBackend::config_read_batch(std::span<ConfigReadItem> items) {
  std::vector<ReadOp> ops;
  std::vector<ConfigReadItem*> owners;
  ops.reserve(items.size());
  for (auto& it : items) {
    auto* dev = dynamic_cast<SysfsDevice*>(it.device);
    if (dev == nullptr) {  // another backend's device (or a wrapper): its own path
      it.result = it.device != nullptr ? it.device->config_read_block(it.offset, it.out)
                                       : Result<void>(Errno(EINVAL));
      continue;
    }
    if (dev->gone()) {
      it.result = Errno(ENODEV);
      continue;
    }
    it.result = dev->check_block(it.offset, it.out.size());
    if (!it.result || it.out.empty()) continue;
    ops.push_back(ReadOp{dev->config_fd(), it.offset, it.out, Ok()});
    owners.push_back(&it);
  }
  batch_.run(ops);
  for (size_t i = 0; i < ops.size(); ++i) {
    owners[i]->result = ops[i].result;
    if (!ops[i].result && ops[i].result.error() == Errno(ENODEV)) {
      static_cast<SysfsDevice*>(owners[i]->device)->mark_gone();
    }
  }
}

}  // namespace pcifs::backend::sysfs
