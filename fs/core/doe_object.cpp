#include "core/doe_object.hpp"

#include <linux/pci_regs.h>

#include <charconv>
#include <cstdio>

namespace pcifs::core {
namespace {

uint32_t le32_at(std::span<const uint8_t> bytes, size_t dword) {
  size_t at = dword * 4;
  return static_cast<uint32_t>(bytes[at]) | static_cast<uint32_t>(bytes[at + 1]) << 8 |
         static_cast<uint32_t>(bytes[at + 2]) << 16 | static_cast<uint32_t>(bytes[at + 3]) << 24;
}

std::optional<unsigned> parse_hex(std::string_view text, size_t digits) {
  if (text.size() != digits) return std::nullopt;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

// The size rules shared by bytes and dwords; `dw1` is read only once the
// object is known to hold a header.
Result<void> check_sizes(size_t dwords, uint32_t dw1, uint32_t max_dwords) {
  if (dwords > max_dwords) return Errno(E2BIG);
  if (doe_object_length(dw1) != dwords) return Errno(EINVAL);
  return Ok();
}

}  // namespace

uint32_t doe_object_length(uint32_t dw1) {
  uint32_t len = dw1 & PCI_DOE_DATA_OBJECT_HEADER_2_LENGTH;
  return len == 0 ? kDoeMaxDwords : len;
}

uint32_t doe_encode_length(uint32_t dwords) {
  return dwords & PCI_DOE_DATA_OBJECT_HEADER_2_LENGTH;  // 2^18 wraps to 0 by design
}

backend::DoeFeature doe_protocol_of(uint32_t dw0) {
  return {static_cast<uint16_t>(dw0 & PCI_DOE_DATA_OBJECT_HEADER_1_VID),
          static_cast<uint8_t>((dw0 & PCI_DOE_DATA_OBJECT_HEADER_1_TYPE) >> 16)};
}

std::pair<uint32_t, uint32_t> doe_header(backend::DoeFeature protocol, uint32_t total_dwords) {
  uint32_t dw0 = protocol.vendor | static_cast<uint32_t>(protocol.type) << 16;
  return {dw0, doe_encode_length(total_dwords)};
}

Result<DoeRequest> parse_doe_request(std::span<const uint8_t> bytes, uint32_t max_dwords) {
  if (bytes.size() % 4 != 0 || bytes.size() < size_t{kDoeHeaderDwords} * 4) return Errno(EINVAL);
  size_t dwords = bytes.size() / 4;
  PCIFS_TRY(check_sizes(dwords, le32_at(bytes, 1), max_dwords));
  DoeRequest req;
  req.dwords.resize(dwords);
  for (size_t i = 0; i < dwords; ++i) req.dwords[i] = le32_at(bytes, i);
  req.protocol = doe_protocol_of(req.dwords[0]);
  return req;
}

Result<backend::DoeFeature> check_doe_dwords(std::span<const uint32_t> dwords,
                                             uint32_t max_dwords) {
  if (dwords.size() < kDoeHeaderDwords) return Errno(EINVAL);
  PCIFS_TRY(check_sizes(dwords.size(), dwords[1], max_dwords));
  return doe_protocol_of(dwords[0]);
}

std::optional<backend::DoeFeature> parse_doe_protocol(std::string_view text) {
  if (text.size() != 7 || text[4] != ':') return std::nullopt;
  auto vendor = parse_hex(text.substr(0, 4), 4);
  auto type = parse_hex(text.substr(5, 2), 2);
  if (!vendor || !type) return std::nullopt;
  return backend::DoeFeature{static_cast<uint16_t>(*vendor), static_cast<uint8_t>(*type)};
}

std::string format_doe_protocol(backend::DoeFeature protocol) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04x:%02x", protocol.vendor, protocol.type);
  return buf;
}

Result<void> check_doe_protocol_allowed(backend::DoeFeature protocol,
                                        std::span<const std::string> allowed) {
  for (const auto& entry : allowed) {
    if (parse_doe_protocol(entry) == protocol) return Ok();
  }
  return Errno(EPERM);
}

}  // namespace pcifs::core
