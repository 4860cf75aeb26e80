// The device directory [S3]: which files a view shows, their modes and sizes,
// who may open them, and the text attributes (formatted exactly as sysfs).
#include <cinttypes>
#include <cstdio>

#include "core/doe_object.hpp"
#include "core/mediator_state.hpp"

namespace pcifs {

using core::DeviceState;

namespace {

struct AttrName {
  FileKind kind;
  const char* name;
};
constexpr AttrName kAttrs[] = {
    {FileKind::kVendor, "vendor"},
    {FileKind::kDevice, "device"},
    {FileKind::kClass, "class"},
    {FileKind::kSubsystemVendor, "subsystem_vendor"},
    {FileKind::kSubsystemDevice, "subsystem_device"},
    {FileKind::kRevision, "revision"},
    {FileKind::kIrq, "irq"},
    {FileKind::kNumaNode, "numa_node"},
    {FileKind::kResource, "resource"},
    {FileKind::kOwner, "owner"},
    {FileKind::kPowerState, "power_state"},
};

// sysfs reports PAGE_SIZE for every text attribute; pcifs does the same so
// that readers that trust st_size behave as on sysfs.
constexpr uint64_t kAttrSize = 4096;

std::string fmt(const char* f, unsigned long long v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

bool may_read_config(const ViewPolicy& v, const Caller& c) {
  return v.privileged(c) || v.config_read != ConfigRead::kNone;
}

bool bar_implemented(const DeviceState& d, unsigned bar) {
  return bar < 6 && bar < d.info.resources.size() && d.info.resources[bar].size() != 0;
}

}  // namespace

void core::DeviceState::await_discovery() const {
  MutexLock lock(doe_mu);
  discovery_cv.wait(doe_mu, [&]() NO_THREAD_SAFETY_ANALYSIS { return discovery_pending == 0; });
}

std::vector<backend::DoeFeature> core::DeviceState::doe_features() const {
  if (bound() || mailboxes.empty()) return info.kernel_doe_features;
  std::vector<backend::DoeFeature> out;
  MutexLock lock(doe_mu);
  for (const auto& f : features) {
    if (!f) continue;
    for (const auto& x : *f) {
      if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Mediator::Impl::text_of(const DeviceState& d, const ViewPolicy& v, const FileRef& ref,
                                    const Caller& caller) const {
  const auto& i = d.info;
  switch (ref.kind) {
    case FileKind::kVendor: return fmt("0x%04llx\n", i.vendor);
    case FileKind::kDevice: return fmt("0x%04llx\n", i.device);
    case FileKind::kClass: return fmt("0x%06llx\n", i.class_code);
    case FileKind::kSubsystemVendor: return fmt("0x%04llx\n", i.subsystem_vendor);
    case FileKind::kSubsystemDevice: return fmt("0x%04llx\n", i.subsystem_device);
    case FileKind::kRevision: return fmt("0x%02llx\n", i.revision);
    case FileKind::kIrq: return std::to_string(i.irq) + "\n";
    case FileKind::kNumaNode: return std::to_string(i.numa_node) + "\n";
    case FileKind::kOwner: return claims.owner_text(d.group) + "\n";
    case FileKind::kPowerState: return std::string(to_string(d.control->power_state())) + "\n";
    case FileKind::kDoeFeature: return core::format_doe_protocol(ref.feature) + "\n";
    case FileKind::kResource: {
      std::string out;
      char line[80];
      for (const auto& r : i.resources) {
        // S4, S6: no physical address shown to unprivileged readers.
        bool mask = v.mask_addresses && !v.privileged(caller) && r.size() != 0;
        std::snprintf(line, sizeof line, "0x%016" PRIx64 " 0x%016" PRIx64 " 0x%016" PRIx64 "\n",
                      mask ? uint64_t{0} : r.start, mask ? uint64_t{0} : r.end, r.flags);
        out += line;
      }
      return out;
    }
    default: return "";
  }
}

std::string core::file_name(const FileRef& ref) {
  for (const auto& a : kAttrs) {
    if (a.kind == ref.kind) return a.name;
  }
  switch (ref.kind) {
    case FileKind::kConfig: return "config";
    case FileKind::kBar: return "resource" + std::to_string(ref.index);
    case FileKind::kRom: return "rom";
    case FileKind::kDoe: return ref.index == 0 ? "doe" : "doe." + std::to_string(ref.index);
    case FileKind::kDoeFeature: return "doe_features/" + core::format_doe_protocol(ref.feature);
    case FileKind::kReset: return "reset";
    case FileKind::kRemove: return "remove";
    default: return "?";
  }
}

namespace {

// "<prefix>N" with N in [0, max], written as files() writes it (no leading 0).
bool numbered(std::string_view name, std::string_view prefix, unsigned long max) {
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return false;
  const std::string_view digits = name.substr(prefix.size());
  if (digits.size() > 1 && digits[0] == '0') return false;
  unsigned long n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9' || n > max) return false;
    n = n * 10 + static_cast<unsigned long>(c - '0');
  }
  return n <= max;
}

}  // namespace

bool Mediator::may_name_device_file(std::string_view name) {
  for (const auto& a : kAttrs) {
    if (name == a.name) return true;
  }
  return name == "config" || name == "rom" || name == "doe" || name == "reset" ||
         name == "remove" || numbered(name, "resource", 5) || numbered(name, "doe.", UINT16_MAX);
}

std::vector<FileEntry> Mediator::Impl::list_files(const ViewPolicy& v, const DeviceState& d) const {
  std::vector<FileEntry> out;
  auto add = [&](std::string name, FileKind kind, uint32_t mode, uint64_t size,
                 uint16_t index = 0) {
    FileEntry e;
    e.name = std::move(name);
    e.ref = FileRef{d.bdf, kind, index, {}};
    e.mode = mode;
    e.size = size;
    e.keep_cache = kind == FileKind::kRom;
    e.nonseekable = kind == FileKind::kDoe;
    out.push_back(std::move(e));
  };
  for (const auto& a : kAttrs) {
    uint32_t mode = a.kind == FileKind::kPowerState ? 0644 : 0444;
    add(a.name, a.kind, mode, kAttrSize);
  }
  uint32_t cfg_mode =
      (v.config_write ? 0200 : 0) | (v.config_read == ConfigRead::kNone ? 0400 : 0444);
  add("config", FileKind::kConfig, cfg_mode, d.info.config_size);
  if (v.bar_access) {
    for (unsigned b = 0; b < 6; ++b) {
      if (bar_implemented(d, b)) {
        add("resource" + std::to_string(b), FileKind::kBar, 0600, d.info.resources[b].size(),
            static_cast<uint16_t>(b));
      }
    }
  }
  if (d.info.has_rom() && v.config_read == ConfigRead::kFull) {
    add("rom", FileKind::kRom, 0444, d.info.resources[6].size());
  }
  for (size_t m = 0; m < d.doe_caps; ++m) {
    add(m == 0 ? "doe" : "doe." + std::to_string(m), FileKind::kDoe, 0666, 0,
        static_cast<uint16_t>(m));
  }
  for (const auto& f : d.doe_features()) {
    FileEntry e;
    e.name = "doe_features/" + core::format_doe_protocol(f);
    e.ref = FileRef{d.bdf, FileKind::kDoeFeature, 0, f};
    e.mode = 0444;
    e.size = kAttrSize;
    out.push_back(std::move(e));
  }
  add("reset", FileKind::kReset, 0200, kAttrSize);
  if (d.info.removable) add("remove", FileKind::kRemove, 0200, kAttrSize);
  return out;
}

Result<void> Mediator::Impl::check_open(const ViewPolicy& v, const Caller& c, DeviceState& d,
                                        const FileRef& ref, OpenFlags flags) {
  const bool priv = v.privileged(c);
  switch (ref.kind) {
    case FileKind::kConfig:
      if (flags.read && !may_read_config(v, c)) return Errno(EACCES);
      if (flags.write && !(priv && v.config_write)) return Errno(EACCES);
      if (flags.write && d.bound()) return Errno(EBUSY);
      return Ok();
    case FileKind::kBar:
      if (!bar_implemented(d, ref.index)) return Errno(ENOENT);
      if (!(priv && v.bar_access)) return Errno(EACCES);
      if (d.bound()) return Errno(EBUSY);
      return Ok();
    case FileKind::kRom:
      if (!d.info.has_rom()) return Errno(ENOENT);
      if (flags.write || v.config_read != ConfigRead::kFull) return Errno(EACCES);
      return Ok();
    case FileKind::kDoe:
      if (ref.index >= d.doe_caps) return Errno(ENOENT);
      if (d.bound()) return Errno(EBUSY);
      return Ok();
    case FileKind::kPowerState:
    case FileKind::kReset:
    case FileKind::kRemove:
      if (ref.kind == FileKind::kRemove && !d.info.removable) return Errno(ENOENT);
      if (ref.kind != FileKind::kPowerState && flags.read) return Errno(EACCES);
      if (flags.write && !priv) return Errno(EACCES);
      if (flags.write && d.bound()) return Errno(EBUSY);
      return Ok();
    default: return flags.write ? Result<void>(Errno(EACCES)) : Ok();
  }
}

Result<std::vector<FileEntry>> Mediator::files(ViewId view, const Bdf& bdf) const {
  auto d = impl_->find_in(view, bdf);
  if (!d) return Errno(ENOENT);
  return impl_->list_files(impl_->policy(view), *d);
}

Result<FileEntry> Mediator::stat(ViewId view, const FileRef& ref) const {
  auto d = impl_->find_in(view, ref.bdf);
  if (!d) return Errno(ENOENT);
  for (auto& e : impl_->list_files(impl_->policy(view), *d)) {
    if (e.ref.kind == ref.kind && e.ref.index == ref.index &&
        (ref.kind != FileKind::kDoeFeature || e.ref.feature == ref.feature)) {
      return e;
    }
  }
  return Errno(ENOENT);
}

}  // namespace pcifs
