// The device directory [S3]: which files a view shows, their modes and sizes,
// who may open them, and the text attributes (formatted exactly as sysfs).
#include <algorithm>
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

std::optional<FileRef> Mediator::device_file_ref(const Bdf& bdf, std::string_view name) {
  for (const auto& a : kAttrs) {
    if (name == a.name) return FileRef{bdf, a.kind, 0, {}};
  }
  auto number = [&](std::string_view prefix, unsigned long max) -> std::optional<uint16_t> {
    if (!numbered(name, prefix, max)) return std::nullopt;
    unsigned long n = 0;
    for (char c : name.substr(prefix.size())) n = n * 10 + static_cast<unsigned long>(c - '0');
    return static_cast<uint16_t>(n);
  };
  if (name == "config") return FileRef{bdf, FileKind::kConfig, 0, {}};
  if (name == "rom") return FileRef{bdf, FileKind::kRom, 0, {}};
  if (name == "doe") return FileRef{bdf, FileKind::kDoe, 0, {}};
  if (name == "reset") return FileRef{bdf, FileKind::kReset, 0, {}};
  if (name == "remove") return FileRef{bdf, FileKind::kRemove, 0, {}};
  if (auto b = number("resource", 5)) return FileRef{bdf, FileKind::kBar, *b, {}};
  // "doe.0" is not a name files() gives (mailbox 0 is "doe").
  if (auto m = number("doe.", UINT16_MAX); m && *m != 0)
    return FileRef{bdf, FileKind::kDoe, *m, {}};
  return std::nullopt;
}

bool Mediator::may_name_device_file(std::string_view name) {
  return device_file_ref(Bdf{}, name).has_value();
}

// One file of the device as the view shows it, or nullopt when the view
// has no such file: the one place that says which files exist, with what
// mode and size (listings and stat() both ask it). A DOE feature is checked
// against the mailboxes' Discovery unless the caller took it from there.
std::optional<FileEntry> Mediator::Impl::entry(const ViewPolicy& v, const DeviceState& d,
                                               const FileRef& ref, bool known_feature) const {
  FileEntry e;
  e.ref = FileRef{d.bdf, ref.kind, ref.index, {}};
  e.mode = 0444;
  e.size = kAttrSize;
  const bool numbered = ref.kind == FileKind::kBar || ref.kind == FileKind::kDoe;
  if (!numbered && ref.index != 0) return std::nullopt;
  switch (ref.kind) {
    case FileKind::kConfig:
      e.mode = (v.config_write ? 0200 : 0) | (v.config_read == ConfigRead::kNone ? 0400 : 0444);
      e.size = d.info.config_size;
      break;
    case FileKind::kBar:
      if (!v.bar_access || !bar_implemented(d, ref.index)) return std::nullopt;
      e.mode = 0600;
      e.size = d.info.resources[ref.index].size();
      break;
    case FileKind::kRom:
      if (!d.info.has_rom() || v.config_read != ConfigRead::kFull) return std::nullopt;
      e.size = d.info.resources[6].size();
      e.keep_cache = true;
      break;
    case FileKind::kDoe:
      if (ref.index >= d.doe_caps) return std::nullopt;
      e.mode = 0666;
      e.size = 0;
      e.nonseekable = true;
      break;
    case FileKind::kDoeFeature: {
      if (!known_feature) {
        const auto fs = d.doe_features();
        if (std::find(fs.begin(), fs.end(), ref.feature) == fs.end()) return std::nullopt;
      }
      e.ref.feature = ref.feature;
      break;
    }
    case FileKind::kReset: e.mode = 0200; break;
    case FileKind::kRemove:
      if (!d.info.removable) return std::nullopt;
      e.mode = 0200;
      break;
    case FileKind::kPowerState: e.mode = 0644; break;
    default:
      if (std::none_of(std::begin(kAttrs), std::end(kAttrs),
                       [&](const AttrName& a) { return a.kind == ref.kind; })) {
        return std::nullopt;
      }
      break;
  }
  e.name = core::file_name(e.ref);
  return e;
}

std::vector<FileEntry> Mediator::Impl::list_files(const ViewPolicy& v, const DeviceState& d) const {
  std::vector<FileEntry> out;
  auto add = [&](FileKind kind, uint16_t index = 0, backend::DoeFeature feature = {}) {
    if (auto e = entry(v, d, FileRef{d.bdf, kind, index, feature}, /*known_feature=*/true)) {
      out.push_back(std::move(*e));
    }
  };
  for (const auto& a : kAttrs) add(a.kind);
  add(FileKind::kConfig);
  for (uint16_t b = 0; b < 6; ++b) add(FileKind::kBar, b);
  add(FileKind::kRom);
  for (size_t m = 0; m < d.doe_caps; ++m) add(FileKind::kDoe, static_cast<uint16_t>(m));
  for (const auto& f : d.doe_features()) add(FileKind::kDoeFeature, 0, f);
  add(FileKind::kReset);
  add(FileKind::kRemove);
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
  const ViewPolicy& v = impl_->policy(view);
  std::optional<FileEntry> e;
  impl_->with_device(v, ref.bdf, [&](const DeviceState& d) {
    e = impl_->entry(v, d, ref, /*known_feature=*/false);
    return true;
  });
  if (!e) return Errno(ENOENT);
  return std::move(*e);
}

}  // namespace pcifs
