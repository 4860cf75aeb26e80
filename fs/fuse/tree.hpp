// The S3 tree of one view, computed from the Mediator on demand: names,
// attributes, listings and link targets. No FUSE calls here, so the tree is
// unit-tested without a mount; the handlers turn its answers into replies.
//
// Thread safety: every method is safe from any thread (the Mediator is; the
// driver-name table has its own lock).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "fuse/inode.hpp"
#include "pcifs/mediator.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::fuse {

// Driver names get small numbers for their inodes; shared by all views.
class DriverNames {
 public:
  uint32_t id(const std::string& name);
  std::optional<std::string> name(uint32_t id) const;

 private:
  mutable Mutex mu_{"DriverNames::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  std::vector<std::string> names_ GUARDED_BY(mu_);
};

struct Attr {
  mode_t mode = 0;  // type and permission bits
  uint64_t size = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint32_t nlink = 1;
};

struct DirEntry {
  std::string name;
  NodeId id;
  mode_t type = 0;  // S_IFDIR | S_IFREG | S_IFLNK
};

class Tree {
 public:
  Tree(Mediator& m, ViewId view, DriverNames& drivers);

  Result<NodeId> lookup(const NodeId& parent, const std::string& name) const;
  // Whether `name` can never be found in `parent`, whatever the view, the
  // devices and their state (a name no listing of this kind of directory
  // has): the kernel may cache its absence (lspci asks every device for
  // `label` and `of_node`). Names that may come (a device, `driver`,
  // `iommu_group`, a DOE feature) are never absent for good.
  static bool absent_for_good(const NodeId& parent, std::string_view name);
  Result<Attr> attr(const NodeId& id) const;
  // Without "." and "..".
  Result<std::vector<DirEntry>> children(const NodeId& dir) const;
  Result<std::string> link_target(const NodeId& link) const;

  // The device whose doe_features/ this operation needs, complete: a listing
  // of a device directory or of doe_features/, a lookup of doe_features or in
  // it, the attributes of a feature. The handler runs it once the device's
  // DOE Discovery has finished (Mediator::when_doe_discovered).
  enum class Op { kLookup, kAttr, kList };
  static std::optional<Bdf> needs_discovery(Op op, const NodeId& node, std::string_view name = {});

  Mediator& mediator() const { return m_; }
  ViewId view() const { return view_; }

 private:
  bool has_device(const Bdf& bdf) const;
  Result<std::vector<DirEntry>> device_children(const Bdf& bdf) const;
  std::vector<DirEntry> group_children() const;
  std::vector<DirEntry> driver_children() const;
  Attr dir_attr() const;

  Mediator& m_;
  ViewId view_;
  DriverNames& drivers_;
  uid_t uid_;
  gid_t gid_;
};

}  // namespace pcifs::fuse
