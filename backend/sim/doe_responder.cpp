// The DOE mailbox state machine (PCIe 6.0 §6.30.2 and §7.9.24).
//
// States: Idle (accepting request dwords), Busy (processing; kSlow,
// kNoResponse, kStuckBusy), Ready (Data Object Ready, response being read),
// Error. `stuck_` forces Busy on top of any state until reset().
//
// Violations reported (DOE misuse an initiator must never commit):
//   - PCI_DOE_WRITE while Busy, while a response is pending, or while Error is set
//   - a request overrunning the mailbox capacity (once per object)
//   - GO while Busy, with a response pending, or with Error set
//   - GO with an empty or incomplete object, a length field over the capacity,
//     or more dwords written than the length field says
//   - reading or advancing PCI_DOE_READ with no object ready or past its end
// A GO the device cannot accept sets Error, so a careless initiator is told at
// once instead of waiting for a timeout.
#include "sim/doe_responder.hpp"

#include <linux/pci_regs.h>

#include <algorithm>
#include <string>
#include <utility>

#include "sim/cdat.hpp"

namespace pcifs::backend::sim {
namespace {

using TimePoint = std::chrono::steady_clock::time_point;

// CXL 2.0 §8.1.11.1 Table Access request/response DW2 fields.
constexpr uint32_t kCdatReqCodeMask = 0x000000ff;
constexpr uint32_t kCdatTableTypeMask = 0x0000ff00;
constexpr unsigned kCdatHandleShift = 16;
constexpr uint8_t kCdatReadEntry = 0;
constexpr uint16_t kCdatLastEntry = 0xffff;

uint32_t object_header0(uint16_t vendor, uint8_t type) {
  return vendor | (static_cast<uint32_t>(type) << 16);
}

// DW1 of an object: 18-bit length in dwords, 0 meaning 2^18 (PCIe 6.0 §6.30.1).
uint32_t decode_length(uint32_t dw1) {
  uint32_t len = dw1 & PCI_DOE_DATA_OBJECT_HEADER_2_LENGTH;
  return len == 0 ? kDoeMaxObjectDwords : len;
}

uint32_t encode_length(size_t dwords) {
  return static_cast<uint32_t>(dwords) & PCI_DOE_DATA_OBJECT_HEADER_2_LENGTH;
}

// Frees the storage too: `v = {}` would keep the capacity.
void release(std::vector<uint32_t>& v) { std::vector<uint32_t>().swap(v); }

}  // namespace

DoeResponder::DoeResponder(DoeResponderConfig cfg, ViolationSink sink)
    : cfg_(cfg), sink_(std::move(sink)) {
  cfg_.mailbox_dwords = std::clamp<uint32_t>(cfg_.mailbox_dwords, 2, kDoeMaxObjectDwords);
}

TimePoint DoeResponder::now() const { return clock_ ? clock_() : std::chrono::steady_clock::now(); }

void DoeResponder::violation(std::string reason) const {
  if (sink_) sink_("DOE: " + std::move(reason));
}

void DoeResponder::settle() {
  if (state_ == State::kBusy && !stuck_ && now() >= ready_at_) {
    state_ = State::kReady;
    read_pos_ = 0;
  }
}

uint32_t DoeResponder::status_bits() const {
  uint32_t s = 0;
  if (state_ == State::kBusy || stuck_) s |= PCI_DOE_STATUS_BUSY;
  if (state_ == State::kError) s |= PCI_DOE_STATUS_ERROR;
  if (state_ == State::kReady) s |= PCI_DOE_STATUS_DATA_OBJECT_READY;
  return s;
}

uint32_t DoeResponder::read(uint32_t reg) {
  settle();
  switch (reg) {
    case PCI_DOE_STATUS: return status_bits();
    case PCI_DOE_READ: return read_mailbox();
    // CAP: no interrupt support. CTRL: Abort and GO read as 0, Interrupt Enable
    // is hardwired 0 without interrupt support. WRITE: reads as 0.
    default: return 0;
  }
}

uint32_t DoeResponder::read_mailbox() {
  // Reading never has a side effect and is not misuse: config dumps (lspci
  // -xxxx, a `cat config`) read every register. With no object ready the
  // register reads 0. Only advancing past the object is initiator misuse.
  if (state_ != State::kReady) return 0;
  return response_[read_pos_];
}

void DoeResponder::write(uint32_t reg, uint32_t value) {
  settle();
  switch (reg) {
    case PCI_DOE_CTRL: write_ctrl(value); break;
    case PCI_DOE_WRITE: write_mailbox(value); break;
    case PCI_DOE_READ: advance_mailbox(); break;
    default: break;  // CAP is read-only; STATUS has no RW1C bit without interrupts
  }
}

void DoeResponder::write_ctrl(uint32_t value) {
  // Abort wins over a GO in the same write: abort must leave the mailbox idle
  // (PCIe 6.0 §6.30.2), whatever else was asked.
  if (value & PCI_DOE_CTRL_ABORT) {
    abort();
  } else if (value & PCI_DOE_CTRL_GO) {
    go();
  }
}

void DoeResponder::write_mailbox(uint32_t value) {
  if (state_ == State::kBusy || stuck_) return violation("PCI_DOE_WRITE while Busy");
  if (state_ == State::kReady) return violation("PCI_DOE_WRITE while a response is pending");
  if (state_ == State::kError) return violation("PCI_DOE_WRITE while Error is set");
  just_consumed_ = false;
  if (request_.size() >= cfg_.mailbox_dwords) {
    if (!overflowed_) {
      violation("request overruns the mailbox of " + std::to_string(cfg_.mailbox_dwords) +
                " dwords");
    }
    overflowed_ = true;
    return;
  }
  append_request(value);
}

void DoeResponder::append_request(uint32_t dw) {
  // Grow with what was written, never by the client's length field, and never
  // beyond the mailbox.
  if (request_.size() == request_.capacity()) {
    size_t want = std::max<size_t>(8, request_.capacity() * 2);
    request_.reserve(std::min<size_t>(want, cfg_.mailbox_dwords));
  }
  request_.push_back(dw);
}

void DoeResponder::advance_mailbox() {
  if (state_ != State::kReady) {
    violation(just_consumed_ ? "PCI_DOE_READ advanced past the end of the data object"
                             : "PCI_DOE_READ advanced with no data object ready");
    return;
  }
  if (++read_pos_ < response_.size()) return;
  // The last dword was consumed: Data Object Ready clears (PCIe 6.0 §7.9.24.5).
  release(response_);
  read_pos_ = 0;
  state_ = State::kIdle;
  just_consumed_ = true;
}

void DoeResponder::abort() {
  release(request_);
  release(response_);
  read_pos_ = 0;
  overflowed_ = false;
  just_consumed_ = false;
  state_ = State::kIdle;  // stuck_ survives: that is what kStuckBusy models
}

void DoeResponder::reset() {
  abort();
  stuck_ = false;
}

void DoeResponder::set_fault(DoeFault fault) { cfg_.fault = fault; }

void DoeResponder::go() {
  if (state_ == State::kBusy || stuck_) return violation("GO while Busy");
  if (state_ == State::kReady) return violation("GO while a response is pending");
  if (state_ == State::kError) return violation("GO while Error is set");
  just_consumed_ = false;
  if (!request_complete()) {
    release(request_);
    overflowed_ = false;
    state_ = State::kError;
    return;
  }
  start_processing();
}

bool DoeResponder::request_complete() {
  size_t n = request_.size();
  if (n == 0) {
    violation("GO with an empty data object");
    return false;
  }
  if (n < 2) {
    violation("GO with an incomplete data object header (1 dword)");
    return false;
  }
  uint32_t len = decode_length(request_[1]);
  if (len > cfg_.mailbox_dwords) {
    violation("GO with length " + std::to_string(len) + " over the mailbox capacity of " +
              std::to_string(cfg_.mailbox_dwords) + " dwords");
    return false;
  }
  if (len != n) {
    violation("GO with length field " + std::to_string(len) + " but " + std::to_string(n) +
              " dwords written" + (n < len ? " (incomplete object)" : ""));
    return false;
  }
  return true;
}

void DoeResponder::start_processing() {
  switch (cfg_.fault) {
    case DoeFault::kNoResponse:
      state_ = State::kBusy;
      ready_at_ = TimePoint::max();
      break;
    case DoeFault::kStuckBusy:
      stuck_ = true;
      state_ = State::kBusy;
      ready_at_ = TimePoint::max();
      break;
    case DoeFault::kError: state_ = State::kError; break;
    case DoeFault::kSlow:
      state_ = respond() ? State::kBusy : State::kError;
      ready_at_ = now() + cfg_.slow_delay;
      break;
    case DoeFault::kNone: state_ = respond() ? State::kReady : State::kError; break;
  }
  release(request_);
  read_pos_ = 0;
}

std::vector<std::pair<uint16_t, uint8_t>> DoeResponder::protocols() const {
  // Index order of Discovery: Discovery itself first, as PCIe 6.0 §6.30.1.1 requires.
  std::vector<std::pair<uint16_t, uint8_t>> p{{kDoeVendorPciSig, kDoeTypeDiscovery}};
  if (cfg_.cdat) p.emplace_back(kDoeVendorCxl, kDoeTypeCdat);
  if (cfg_.echo) p.emplace_back(cfg_.vendor_id, kDoeTypeEcho);
  return p;
}

bool DoeResponder::respond() {
  uint16_t vendor = static_cast<uint16_t>(request_[0] & PCI_DOE_DATA_OBJECT_HEADER_1_VID);
  uint8_t type = static_cast<uint8_t>((request_[0] & PCI_DOE_DATA_OBJECT_HEADER_1_TYPE) >> 16);
  auto protos = protocols();
  // An unsupported protocol gets Error rather than silence: PCIe 6.0 §6.30.2
  // lets a DOE instance signal Error for a request it cannot process, and an
  // initiator learns it at once instead of after its timeout.
  if (std::find(protos.begin(), protos.end(), std::pair{vendor, type}) == protos.end()) {
    return false;
  }
  if (vendor == kDoeVendorPciSig && type == kDoeTypeDiscovery) return respond_discovery();
  if (vendor == kDoeVendorCxl && type == kDoeTypeCdat) return respond_cdat();
  respond_echo();
  return true;
}

bool DoeResponder::respond_discovery() {
  // Request: header + DW2 index (PCIe 6.0 §6.30.1.1). An index past the last
  // protocol is a request the device cannot answer: Error.
  auto protos = protocols();
  if (request_.size() != 3) return false;
  uint32_t index = request_[2] & PCI_DOE_DATA_OBJECT_DISC_REQ_3_INDEX;
  if (index >= protos.size()) return false;
  uint32_t next = index + 1 < protos.size() ? index + 1 : 0;  // 0: this was the last
  auto [vid, prot] = protos[index];
  uint32_t dw2 = vid | (static_cast<uint32_t>(prot) << 16) | (next << 24);
  response_ = {object_header0(kDoeVendorPciSig, kDoeTypeDiscovery), 3, dw2};
  return true;
}

bool DoeResponder::respond_cdat() {
  // Read Entry request (CXL 2.0 §8.1.11.1): code 0, table type 0 (CDAT), handle.
  // A different code, table type or a handle past the table: Error.
  if (request_.size() != 3) return false;
  uint32_t dw2 = request_[2];
  uint32_t handle = dw2 >> kCdatHandleShift;
  const CdatTable& table = default_cdat_table();
  if ((dw2 & kCdatReqCodeMask) != kCdatReadEntry || (dw2 & kCdatTableTypeMask) != 0 ||
      handle >= table.entry_count()) {
    return false;
  }
  auto entry = table.entry(handle);
  uint32_t next = handle + 1 < table.entry_count() ? handle + 1 : kCdatLastEntry;
  response_ = {object_header0(kDoeVendorCxl, kDoeTypeCdat), encode_length(3 + entry.size()),
               next << kCdatHandleShift};
  response_.insert(response_.end(), entry.begin(), entry.end());
  return true;
}

void DoeResponder::respond_echo() {
  // The response is the request itself: same header (so same length), same payload.
  response_ = std::move(request_);
  release(request_);
}

}  // namespace pcifs::backend::sim
