#include "sim/cdat.hpp"

#include <bit>
#include <cstring>
#include <numeric>

namespace pcifs::backend::sim {
namespace {

static_assert(std::endian::native == std::endian::little,
              "CDAT structures are laid out little-endian, as on the wire");

constexpr uint64_t kDpaLength = 256ull << 20;

template <typename T>
std::vector<uint32_t> to_dwords(const T& s) {
  static_assert(sizeof(T) % 4 == 0);
  std::vector<uint32_t> out(sizeof(T) / 4);
  std::memcpy(out.data(), &s, sizeof(T));
  return out;
}

template <typename T>
CdatSubHeader sub_header(CdatType type) {
  return CdatSubHeader{static_cast<uint8_t>(type), 0, static_cast<uint16_t>(sizeof(T))};
}

std::vector<std::vector<uint32_t>> structures() {
  CdatDsmas dsmas{sub_header<CdatDsmas>(CdatType::kDsmas), 0, 0, 0, 0, kDpaLength};
  CdatDslbis dslbis{sub_header<CdatDslbis>(CdatType::kDslbis), 0, 0, 0, 0, 1000, {100, 0, 0}, 0};
  CdatDsemts dsemts{sub_header<CdatDsemts>(CdatType::kDsemts), 0, 1, 0, 0, kDpaLength};
  return {to_dwords(dsmas), to_dwords(dslbis), to_dwords(dsemts)};
}

CdatTable build_default() {
  auto entries = structures();
  CdatHeader hdr{};
  hdr.revision = 1;
  hdr.sequence = 1;
  size_t len = sizeof(CdatHeader);
  for (const auto& e : entries) len += e.size() * 4;
  hdr.length = static_cast<uint32_t>(len);
  entries.insert(entries.begin(), to_dwords(hdr));
  // The checksum byte is chosen last so that the byte sum of the table is 0.
  uint8_t sum = cdat_byte_sum(CdatTable(entries).bytes());
  hdr.checksum = static_cast<uint8_t>(0x100 - sum);
  entries[0] = to_dwords(hdr);
  return CdatTable(std::move(entries));
}

}  // namespace

std::vector<uint8_t> CdatTable::bytes() const {
  std::vector<uint8_t> out;
  for (const auto& e : entries_) {
    size_t at = out.size();
    out.resize(at + e.size() * 4);
    std::memcpy(out.data() + at, e.data(), e.size() * 4);
  }
  return out;
}

const CdatTable& default_cdat_table() {
  static const CdatTable table = build_default();
  return table;
}

uint8_t cdat_byte_sum(std::span<const uint8_t> bytes) {
  unsigned sum = std::accumulate(bytes.begin(), bytes.end(), 0u);
  return static_cast<uint8_t>(sum & 0xff);
}

}  // namespace pcifs::backend::sim
