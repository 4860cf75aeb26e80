// A small but real CDAT table (Coherent Device Attribute Table, CDAT spec rev 1.03)
// for the simulated CXL memory device, served entry by entry by the DOE
// responder's Table Access protocol (CXL 2.0 §8.1.11).
//
// <linux/pci_regs.h> has no CDAT structures, so they are defined here, with the
// CDAT spec table that defines each. Layouts are little-endian, as on the wire.
//
// Ownership: a CdatTable is a plain value (its entries as dwords). Thread safety:
// const methods may be called from any thread; default_cdat_table() is built once
// and immutable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace pcifs::backend::sim {

// CDAT spec rev 1.03 §2 Table 1: structure types.
enum class CdatType : uint8_t {
  kDsmas = 0,   // Device Scoped Memory Affinity Structure
  kDslbis = 1,  // Device Scoped Latency and Bandwidth Information Structure
  kDsmscis = 2,
  kDsis = 3,
  kDsemts = 4,  // Device Scoped EFI Memory Type Structure
  kSslbis = 5,
};

// CDAT spec §2 Table 1 (header): 16 bytes. Checksum makes the byte sum of the
// whole table zero; Sequence changes whenever the table does.
struct CdatHeader {
  uint32_t length;   // whole table in bytes, header included
  uint8_t revision;  // 1
  uint8_t checksum;
  uint8_t reserved[6];
  uint32_t sequence;
};
static_assert(sizeof(CdatHeader) == 16);

// Common to every structure after the header (CDAT spec §3).
struct CdatSubHeader {
  uint8_t type;
  uint8_t reserved;
  uint16_t length;  // of the structure, in bytes
};
static_assert(sizeof(CdatSubHeader) == 4);

// CDAT spec §3.1 Table 3.
struct CdatDsmas {
  CdatSubHeader hdr;
  uint8_t dsmad_handle;
  uint8_t flags;
  uint16_t reserved;
  uint64_t dpa_base;
  uint64_t dpa_length;
};
static_assert(sizeof(CdatDsmas) == 24);

// CDAT spec §3.2 Table 4. Entry values are in entry_base_unit (picoseconds
// for latency, MB/s for bandwidth).
struct CdatDslbis {
  CdatSubHeader hdr;
  uint8_t handle;
  uint8_t flags;
  uint8_t data_type;  // 0 = access latency
  uint8_t reserved;
  uint64_t entry_base_unit;
  uint16_t entry[3];
  uint16_t reserved2;
};
static_assert(sizeof(CdatDslbis) == 24);

// CDAT spec §3.5 Table 7.
struct CdatDsemts {
  CdatSubHeader hdr;
  uint8_t dsmas_handle;
  uint8_t memory_type;  // 1 = EfiConventionalMemory with EFI_MEMORY_SP
  uint16_t reserved;
  uint64_t dpa_offset;
  uint64_t dpa_length;
};
static_assert(sizeof(CdatDsemts) == 24);

// The table as entries addressed by Table Access entry handles: handle 0 is the
// header, handle i the i-th structure after it. Every entry is a whole number
// of dwords (all CDAT structures are).
class CdatTable {
 public:
  explicit CdatTable(std::vector<std::vector<uint32_t>> entries) : entries_(std::move(entries)) {}
  size_t entry_count() const { return entries_.size(); }
  std::span<const uint32_t> entry(size_t handle) const { return entries_[handle]; }
  // The whole table as bytes, header first (what a reader reassembles).
  std::vector<uint8_t> bytes() const;

 private:
  std::vector<std::vector<uint32_t>> entries_;
};

// The simulated device's table: header, one DSMAS (256 MiB at DPA 0), one DSLBIS
// (100 ns read latency) and one DSEMTS, checksummed.
const CdatTable& default_cdat_table();

// Byte sum of `bytes` modulo 256 (0 for a valid CDAT table).
uint8_t cdat_byte_sum(std::span<const uint8_t> bytes);

}  // namespace pcifs::backend::sim
