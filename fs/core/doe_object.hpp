// DOE data objects as users write them: validation of a request object and the
// protocol allow-list check of a view (SPEC S8, PCIe 6.0 §6.30.1).
//
// A request comes from an untrusted writer, so every check that bounds memory
// runs on the byte count before anything is allocated. Pure functions over
// values: thread-safe, no ownership.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

// PCIe 6.0 §6.30.1: DW1 Length is 18 bits in dwords including the 2-dword
// header; 0 encodes 2^18, which is also the largest object a mailbox carries.
inline constexpr uint32_t kDoeMaxDwords = 1u << 18;
inline constexpr uint32_t kDoeHeaderDwords = 2;
// PCIe 6.0 §6.30.1.1: Discovery is vendor PCI-SIG (0001), type 00.
inline constexpr uint16_t kDoeVendorPciSig = 0x0001;
inline constexpr uint8_t kDoeTypeDiscovery = 0x00;

// A validated request: the dwords to write to the mailbox and its protocol.
struct DoeRequest {
  std::vector<uint32_t> dwords;
  backend::DoeFeature protocol;
};

// The object length a DW1 header claims, in dwords (0 decodes to 2^18).
uint32_t doe_object_length(uint32_t dw1);
// The DW1 value that encodes `dwords` (2^18 encodes as 0).
uint32_t doe_encode_length(uint32_t dwords);
// The protocol named by a DW0 header.
backend::DoeFeature doe_protocol_of(uint32_t dw0);
// The two header dwords of an object of `total_dwords` (header included).
std::pair<uint32_t, uint32_t> doe_header(backend::DoeFeature protocol, uint32_t total_dwords);

// Validates `bytes` (one write() to a doe file, little-endian dwords):
//   size % 4 != 0, size < 8, or DW1 length != size / 4  -> EINVAL
//   size / 4 > max_dwords                                -> E2BIG (checked first
//   among the size checks that could allocate; nothing is allocated before it)
Result<DoeRequest> parse_doe_request(std::span<const uint8_t> bytes,
                                     uint32_t max_dwords = kDoeMaxDwords);

// The same checks on dwords already in memory (requests built by the core).
Result<backend::DoeFeature> check_doe_dwords(std::span<const uint32_t> dwords,
                                             uint32_t max_dwords = kDoeMaxDwords);

// "VVVV:TT" (hex, either case) as in a view's doe_protocols; nullopt otherwise.
std::optional<backend::DoeFeature> parse_doe_protocol(std::string_view text);
// "vvvv:tt", lower case, as Linux names doe_features/ entries.
std::string format_doe_protocol(backend::DoeFeature protocol);

// EPERM unless `protocol` is in `allowed` ("VVVV:TT" strings; entries that do
// not parse never match — the view loader reports them).
Result<void> check_doe_protocol_allowed(backend::DoeFeature protocol,
                                        std::span<const std::string> allowed);

}  // namespace pcifs::core
