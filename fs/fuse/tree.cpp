#include "fuse/tree.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <optional>

namespace pcifs::fuse {

uint32_t DriverNames::id(const std::string& name) {
  MutexLock lock(mu_);
  auto it = std::find(names_.begin(), names_.end(), name);
  if (it != names_.end()) return static_cast<uint32_t>(it - names_.begin());
  names_.push_back(name);
  return static_cast<uint32_t>(names_.size() - 1);
}

std::optional<std::string> DriverNames::name(uint32_t id) const {
  MutexLock lock(mu_);
  if (id >= names_.size()) return std::nullopt;
  return names_[id];
}

Tree::Tree(Mediator& m, ViewId view, DriverNames& drivers) : m_(m), view_(view), drivers_(drivers) {
  const ViewPolicy& p = m.view(view);
  uid_ = p.has_uid ? p.uid : 0;
  gid_ = p.gid;  // the "gid" field, else the view's uid, else 0 (parse_view)
}

bool Tree::has_device(const Bdf& bdf) const { return m_.has_device(view_, bdf); }

Attr Tree::dir_attr() const { return Attr{S_IFDIR | 0555, 0, uid_, gid_, 2}; }

Result<std::vector<DirEntry>> Tree::device_children(const Bdf& bdf) const {
  PCIFS_TRY_ASSIGN(files, m_.files(view_, bdf));
  std::vector<DirEntry> out;
  bool features = false;
  for (const auto& f : files) {
    if (f.ref.kind == FileKind::kDoeFeature) {
      features = true;
      continue;
    }
    out.push_back({f.name, NodeId::of(f.ref), S_IFREG});
  }
  if (features) out.push_back({"doe_features", {Node::kDoeFeaturesDir, bdf, 0}, S_IFDIR});
  if (m_.driver(view_, bdf)) out.push_back({"driver", {Node::kDriverLink, bdf, 0}, S_IFLNK});
  if (m_.iommu_group(view_, bdf)) {
    out.push_back({"iommu_group", {Node::kIommuLink, bdf, 0}, S_IFLNK});
  }
  return out;
}

std::vector<DirEntry> Tree::group_children() const {
  std::vector<DirEntry> out;
  for (int g : m_.iommu_groups(view_)) {
    out.push_back({std::to_string(g), {Node::kGroupDir, {}, static_cast<uint32_t>(g)}, S_IFDIR});
  }
  return out;
}

std::vector<DirEntry> Tree::driver_children() const {
  std::vector<DirEntry> out;
  for (const auto& n : m_.drivers(view_)) {
    out.push_back({n, {Node::kDriverDir, {}, drivers_.id(n)}, S_IFDIR});
  }
  return out;
}

Result<std::vector<DirEntry>> Tree::children(const NodeId& dir) const {
  std::vector<DirEntry> out;
  switch (dir.node) {
    case Node::kRoot:
      out.push_back({"devices", {Node::kDevicesDir, {}, 0}, S_IFDIR});
      out.push_back({"drivers", {Node::kDriversDir, {}, 0}, S_IFDIR});
      out.push_back({"iommu_groups", {Node::kGroupsDir, {}, 0}, S_IFDIR});
      out.push_back({"status", {Node::kStatus, {}, 0}, S_IFREG});
      return out;
    case Node::kDevicesDir:
      for (const auto& b : m_.devices(view_)) {
        out.push_back({b.str(), {Node::kDeviceDir, b, 0}, S_IFDIR});
      }
      return out;
    case Node::kDeviceDir: return device_children(dir.bdf);
    case Node::kDoeFeaturesDir: {
      PCIFS_TRY_ASSIGN(files, m_.files(view_, dir.bdf));
      for (const auto& f : files) {
        if (f.ref.kind != FileKind::kDoeFeature) continue;
        out.push_back({f.name.substr(f.name.find('/') + 1), NodeId::of(f.ref), S_IFREG});
      }
      return out;
    }
    case Node::kGroupsDir: return group_children();
    case Node::kGroupDir:
      out.push_back({"devices", {Node::kGroupDevicesDir, {}, dir.arg}, S_IFDIR});
      return out;
    case Node::kGroupDevicesDir:
      for (const auto& b : m_.group_devices(view_, static_cast<int>(dir.arg))) {
        out.push_back({b.str(), {Node::kGroupDeviceLink, b, dir.arg}, S_IFLNK});
      }
      return out;
    case Node::kDriversDir: return driver_children();
    case Node::kDriverDir: {
      auto name = drivers_.name(dir.arg);
      if (!name) return out;
      for (const auto& b : m_.driver_devices(view_, *name)) {
        out.push_back({b.str(), {Node::kDriverDeviceLink, b, dir.arg}, S_IFLNK});
      }
      return out;
    }
    default: return Errno(ENOTDIR);
  }
}

Result<NodeId> Tree::lookup(const NodeId& parent, const std::string& name) const {
  // Names that are a BDF are found without listing every device: the cost
  // of a lookup does not grow with the number of devices.
  auto device = [&]() -> std::optional<Bdf> {
    auto b = Bdf::parse(name);
    if (!b || b->str() != name || !has_device(*b)) return std::nullopt;
    return b;
  };
  switch (parent.node) {
    case Node::kDevicesDir: {
      auto b = device();
      if (!b) return Errno(ENOENT);
      return NodeId{Node::kDeviceDir, *b, 0};
    }
    // A file of a device: that one file's entry, not the device's listing.
    case Node::kDeviceDir:
      if (auto ref = Mediator::device_file_ref(parent.bdf, name)) {
        if (!m_.stat(view_, *ref)) return Errno(ENOENT);
        return NodeId::of(*ref);
      }
      break;
    case Node::kGroupDevicesDir: {
      auto b = device();
      auto g = b ? m_.iommu_group(view_, *b) : std::nullopt;
      if (!g || static_cast<uint32_t>(*g) != parent.arg) return Errno(ENOENT);
      return NodeId{Node::kGroupDeviceLink, *b, parent.arg};
    }
    case Node::kDriverDir: {
      auto b = device();
      auto name_of = drivers_.name(parent.arg);
      if (!b || !name_of || m_.driver(view_, *b) != name_of) return Errno(ENOENT);
      return NodeId{Node::kDriverDeviceLink, *b, parent.arg};
    }
    // A group or a driver is found in the index: O(its devices), not a
    // listing of every device.
    case Node::kGroupsDir: {
      char* end = nullptr;
      errno = 0;
      const long g = std::strtol(name.c_str(), &end, 10);
      if (errno != 0 || end == name.c_str() || *end != '\0' || g < 0 || g > INT32_MAX ||
          std::to_string(g) != name || !m_.has_group(view_, static_cast<int>(g))) {
        return Errno(ENOENT);
      }
      return NodeId{Node::kGroupDir, {}, static_cast<uint32_t>(g)};
    }
    case Node::kDriversDir:
      if (!m_.has_driver(view_, name)) return Errno(ENOENT);
      return NodeId{Node::kDriverDir, {}, drivers_.id(name)};
    default: break;
  }
  PCIFS_TRY_ASSIGN(list, children(parent));
  for (auto& e : list) {
    if (e.name == name) return e.id;
  }
  return Errno(ENOENT);
}

std::optional<Bdf> Tree::needs_discovery(Op op, const NodeId& node, std::string_view name) {
  bool needs = false;
  switch (node.node) {
    case Node::kDeviceDir:
      needs = op == Op::kList || (op == Op::kLookup && name == "doe_features");
      break;
    case Node::kDoeFeaturesDir: needs = op != Op::kAttr; break;
    case Node::kDoeFeature: needs = op == Op::kAttr; break;
    default: break;
  }
  if (!needs) return std::nullopt;
  return node.bdf;
}

bool Tree::absent_for_good(const NodeId& parent, std::string_view name) {
  switch (parent.node) {
    case Node::kRoot:
      return name != "devices" && name != "drivers" && name != "iommu_groups" && name != "status";
    case Node::kDeviceDir:
      return name != "doe_features" && name != "driver" && name != "iommu_group" &&
             !Mediator::may_name_device_file(name);
    case Node::kGroupDir: return name != "devices";
    default: return false;
  }
}

Result<Attr> Tree::attr(const NodeId& id) const {
  switch (id.node) {
    case Node::kRoot:
    case Node::kDevicesDir:
    case Node::kGroupsDir:
    case Node::kDriversDir: return dir_attr();
    case Node::kStatus: return Attr{S_IFREG | 0444, 4096, uid_, gid_, 1};
    case Node::kDeviceDir:
    case Node::kDoeFeaturesDir:
      if (!has_device(id.bdf)) return Errno(ENOENT);
      return dir_attr();
    case Node::kDeviceFile:
    case Node::kDoeFeature: {
      PCIFS_TRY_ASSIGN(e, m_.stat(view_, id.file_ref()));
      return Attr{static_cast<mode_t>(S_IFREG | e.mode), e.size, uid_, gid_, 1};
    }
    case Node::kGroupDir:
    case Node::kGroupDevicesDir:
    case Node::kDriverDir: return dir_attr();
    case Node::kDriverLink:
    case Node::kIommuLink:
    case Node::kGroupDeviceLink:
    case Node::kDriverDeviceLink: {
      PCIFS_TRY_ASSIGN(target, link_target(id));
      return Attr{S_IFLNK | 0777, target.size(), uid_, gid_, 1};
    }
  }
  return Errno(ENOENT);
}

Result<std::string> Tree::link_target(const NodeId& id) const {
  switch (id.node) {
    case Node::kDriverLink: {
      auto d = m_.driver(view_, id.bdf);
      if (!d) return Errno(ENOENT);
      return "../../drivers/" + *d;
    }
    case Node::kIommuLink: {
      auto g = m_.iommu_group(view_, id.bdf);
      if (!g) return Errno(ENOENT);
      return "../../iommu_groups/" + std::to_string(*g);
    }
    case Node::kGroupDeviceLink:
      if (!has_device(id.bdf)) return Errno(ENOENT);
      return "../../../devices/" + id.bdf.str();
    case Node::kDriverDeviceLink:
      if (!has_device(id.bdf)) return Errno(ENOENT);
      return "../../devices/" + id.bdf.str();
    default: return Errno(EINVAL);
  }
}

}  // namespace pcifs::fuse
