#include "fuse/inode.hpp"

namespace pcifs::fuse {
namespace {

constexpr uint64_t kRootIno = 1;  // FUSE_ROOT_ID
constexpr uint32_t kArgMask = 0xffffff;

uint32_t pack(const Bdf& b) {
  return static_cast<uint32_t>(b.domain) << 16 | static_cast<uint32_t>(b.bus) << 8 |
         static_cast<uint32_t>((b.dev & 0x1f) << 3 | (b.fn & 7));
}

Bdf unpack(uint32_t v) {
  Bdf b;
  b.domain = static_cast<uint16_t>(v >> 16);
  b.bus = static_cast<uint8_t>(v >> 8);
  b.dev = static_cast<uint8_t>((v >> 3) & 0x1f);
  b.fn = static_cast<uint8_t>(v & 7);
  return b;
}

}  // namespace

NodeId NodeId::device_file(const Bdf& bdf, FileKind kind, uint16_t index) {
  return NodeId{Node::kDeviceFile, bdf, static_cast<uint32_t>(kind) << 16 | index};
}

NodeId NodeId::of(const FileRef& ref) {
  if (ref.kind == FileKind::kDoeFeature) {
    return NodeId{Node::kDoeFeature, ref.bdf,
                  static_cast<uint32_t>(ref.feature.vendor) << 8 | ref.feature.type};
  }
  return device_file(ref.bdf, ref.kind, ref.index);
}

FileRef NodeId::file_ref() const {
  FileRef r;
  r.bdf = bdf;
  if (node == Node::kDoeFeature) {
    r.kind = FileKind::kDoeFeature;
    r.feature.vendor = static_cast<uint16_t>(arg >> 8);
    r.feature.type = static_cast<uint8_t>(arg & 0xff);
  } else {
    r.kind = static_cast<FileKind>(arg >> 16);
    r.index = static_cast<uint16_t>(arg & 0xffff);
  }
  return r;
}

uint64_t encode(const NodeId& id) {
  if (id.node == Node::kRoot) return kRootIno;
  return static_cast<uint64_t>(id.node) << 56 | static_cast<uint64_t>(pack(id.bdf)) << 24 |
         (id.arg & kArgMask);
}

std::optional<NodeId> decode(uint64_t ino) {
  if (ino == kRootIno) return NodeId{};
  const auto node = static_cast<uint8_t>(ino >> 56);
  if (node <= static_cast<uint8_t>(Node::kRoot) || node > static_cast<uint8_t>(Node::kStatus)) {
    return std::nullopt;
  }
  NodeId id{static_cast<Node>(node), unpack(static_cast<uint32_t>(ino >> 24)),
            static_cast<uint32_t>(ino & kArgMask)};
  if (encode(id) != ino) return std::nullopt;
  return id;
}

}  // namespace pcifs::fuse
