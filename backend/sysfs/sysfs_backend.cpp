// SysfsBackend: enumeration, rescans (whole tree or one slot) and the uevent
// wiring that drives them; batched config reads.
#include "sysfs/sysfs_backend.hpp"

#include <dirent.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstdio>
#include <filesystem>
#include <utility>

#include "sysfs/crash_points.hpp"
#include "sysfs/sysfs_attrs.hpp"

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

// Whether `path` is the file open on `fd`. The device keeps its `config` open,
// so that inode cannot be reused: a re-created directory (remove + add, even
// between two rescans) always has another.
bool same_file(int fd, const std::string& path) {
  struct stat open_st {};
  struct stat path_st {};
  return ::fstat(fd, &open_st) == 0 && ::stat(path.c_str(), &path_st) == 0 &&
         open_st.st_dev == path_st.st_dev && open_st.st_ino == path_st.st_ino;
}

// A kept device is still the same function, with the same owner, if it was
// not seen vanishing, its `config` is the one it opened, and its `driver` link
// names the driver it was enumerated with (bind/unbind replace it).
bool still_same(const SysfsDevice& dev) {
  return !dev.gone() && same_file(dev.config_fd(), dev.dir() + "/config") &&
         link_basename(dev.dir() + "/driver") == dev.info().driver;
}

std::string absolute(std::string root) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(root, ec);
  return ec ? std::move(root) : abs.string();
}

bool on_sysfs(const std::string& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == SYSFS_MAGIC;
}

}  // namespace

std::optional<std::string> SysfsBackend::shared_root() const {
  std::error_code ec;
  auto canonical = std::filesystem::canonical(root_, ec);
  return ec ? root_ : canonical.string();
}

SysfsBackend::SysfsBackend(std::string root, SysfsOptions options)
    : root_(absolute(std::move(root))),
      options_(std::move(options)),
      batch_(options_.ring_entries, options_.force_pread_batch) {
  if (auto bad = arm_crash_point_from_env()) warn(*bad);  // tests only (crash_points.hpp)
  open_uevents();  // before the scan: what arrives meanwhile is queued, not missed
  Scan s = scan({});
  MutexLock lock(mu_);
  devices_ = std::move(s.found);
  skipped_ = std::move(s.skipped);
}

SysfsBackend::~SysfsBackend() {
  if (monitor_) monitor_->stop();  // its handlers use every member below
}

void SysfsBackend::warn(const std::string& message) const {
  if (options_.warn) return options_.warn(message);
  std::fprintf(stderr, "pcifs: %s\n", message.c_str());
}

// The real tree is on sysfs and its uevents come from the kernel; any other
// tree is driven by whoever made it, through a socket inside it.
void SysfsBackend::open_uevents() {
  if (!options_.uevents) {
    hotplug_source_ = "off: disabled";
    return;
  }
  const bool kernel = on_sysfs(root_);
  const std::string where = kernel ? "netlink uevents" : root_ + "/.pcifs-uevents";
  auto src = kernel ? open_kernel_uevents() : open_local_uevents(where);
  if (!src) {
    hotplug_source_ = "off: " + where + ": " + errno_text(src.error());
    warn("sysfs:" + root_ + ": hot-plug off: cannot listen on " + where + " (" +
         errno_text(src.error()) + "); devices that come or go are not followed");
    return;
  }
  hotplug_source_ = src->name;
  monitor_ = std::make_unique<UeventMonitor>(std::move(*src));
}

// The thread starts with the first callback: there is nobody to tell before,
// and a daemon forks into the background between construction and then (a
// thread started earlier would not survive the fork).
void SysfsBackend::start_uevents() {
  if (!monitor_) return;
  auto r = monitor_->start(
      [this](const PciEvent& ev) { on_uevent(ev); },
      [this] {
        warn("sysfs:" + root_ + ": uevents were lost; rescanning");
        rescan();
      },
      [this](const std::string& why) { warn("sysfs:" + root_ + ": hot-plug stopped: " + why); },
      [this] { return settled(); });
  if (!r) warn("sysfs:" + root_ + ": hot-plug off: " + errno_text(r.error()));
}

UeventMonitor::Stats SysfsBackend::uevent_stats() const {
  return monitor_ ? monitor_->stats() : UeventMonitor::Stats{};
}

Result<std::unique_ptr<SysfsBackend>> SysfsBackend::open(std::string root, SysfsOptions options) {
  struct stat st {};
  if (::stat((root + "/devices").c_str(), &st) != 0) return Errno(errno > 0 ? errno : ENOENT);
  if (!S_ISDIR(st.st_mode)) return Errno(ENOTDIR);
  return std::make_unique<SysfsBackend>(std::move(root), std::move(options));
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
  const bool on = static_cast<bool>(fn);
  {
    MutexLock serial(rescan_mu_);  // a callback in progress ends first
    MutexLock lock(mu_);
    hotplug_ = std::move(fn);
  }
  if (on) start_uevents();
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

void SysfsBackend::rescan_slot(const Bdf& bdf) {
  MutexLock serial(rescan_mu_);
  settling_.erase(bdf);
  slot_changed(bdf, true);
}

void SysfsBackend::on_uevent(const PciEvent& ev) {
  MutexLock serial(rescan_mu_);
  if (ev.action == PciAction::kUnbind) {
    settling_[ev.bdf] = std::chrono::steady_clock::now() + options_.unbind_settle;
    slot_changed(ev.bdf, false);
    return;
  }
  settling_.erase(ev.bdf);
  slot_changed(ev.bdf, true);
}

std::optional<std::chrono::milliseconds> SysfsBackend::settled() {
  MutexLock serial(rescan_mu_);
  const auto now = std::chrono::steady_clock::now();
  std::vector<Bdf> due;
  for (const auto& [bdf, when] : settling_) {
    if (when <= now) due.push_back(bdf);
  }
  for (const Bdf& bdf : due) {
    settling_.erase(bdf);
    slot_changed(bdf, true);
  }
  if (settling_.empty()) return std::nullopt;
  auto next = settling_.begin()->second;
  for (const auto& [bdf, when] : settling_) next = std::min(next, when);
  // Rounded up: waking a millisecond early would only find nothing due.
  return std::chrono::ceil<std::chrono::milliseconds>(next - std::chrono::steady_clock::now());
}

void SysfsBackend::slot_changed(const Bdf& bdf, bool may_arrive) {
  std::shared_ptr<SysfsDevice> old;
  {
    MutexLock lock(mu_);
    auto it = devices_.find(bdf);
    if (it != devices_.end()) old = it->second;
  }
  // A repeated or synthetic uevent (`udevadm trigger --action=add`) changes
  // nothing: the handles on an unchanged function stay good.
  if (old && still_same(*old)) return;
  const std::string name = bdf.str();
  const std::string path = root_ + "/devices/" + name;
  std::shared_ptr<SysfsDevice> fresh;
  std::string skip;
  struct stat st {};
  if (may_arrive && ::stat(path.c_str(), &st) == 0) {
    auto dev = SysfsDevice::open(path, bdf, options_.d3hot_delay);
    if (dev) {
      fresh = std::move(*dev);
    } else {
      skip = name + ": " + std::string(dev.error().name());
    }
  }
  if (old) old->mark_gone();
  HotplugFn fn;
  {
    MutexLock lock(mu_);
    if (old) devices_.erase(bdf);
    if (fresh) devices_[bdf] = fresh;
    std::erase_if(skipped_, [&](const std::string& s) { return s.starts_with(name + ":"); });
    if (!skip.empty()) skipped_.push_back(skip);
    fn = hotplug_;
  }
  if (!fn) return;
  if (old) fn(bdf, false);
  if (fresh) fn(bdf, true);
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
