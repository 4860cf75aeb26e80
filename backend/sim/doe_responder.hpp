// The simulated DOE mailbox: a Data Object Exchange responder (PCIe 6.0 §6.30)
// driven only through the registers of the DOE extended capability, as a device
// would be. It serves Discovery (0001:00), optionally CXL CDAT table access
// (1e98:02, CXL 2.0 §8.1.11) and a vendor-defined echo protocol (VID:01), and can
// misbehave on purpose (DoeFault) so the core's timeout/abort/dead-mailbox paths
// can be tested.
//
// Ownership: one DoeResponder per DOE capability, owned by its SimDevice. It owns
// the request being written and the response being read; both grow only as
// dwords are actually written (never by a length a client chose) and are bounded
// by mailbox_dwords.
//
// Misuse that real hardware would not tolerate (see doe_responder.cpp for the
// list) is reported through the ViolationSink with a short reason, and otherwise
// ignored as a device would.
//
// Thread safety: none. The owning SimDevice serialises every call (it holds its
// per-function lock around config accesses); the sink is called synchronously
// from inside read()/write() with that lock held.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pcifs::backend::sim {

enum class DoeFault {
  kNone,
  kNoResponse,  // Busy after GO, never a response; ABORT clears Busy
  kError,       // GO sets Error instead of responding; ABORT clears it
  kStuckBusy,   // Busy after GO forever, even across ABORT; only reset() clears it
  kSlow,        // the response is ready only slow_delay after GO (Busy meanwhile)
};

// Data object protocols this responder can serve (vendor id, data object type).
inline constexpr uint16_t kDoeVendorPciSig = 0x0001;
inline constexpr uint8_t kDoeTypeDiscovery = 0x00;
inline constexpr uint16_t kDoeVendorCxl = 0x1e98;
inline constexpr uint8_t kDoeTypeCdat = 0x02;
inline constexpr uint8_t kDoeTypeEcho = 0x01;  // with the device's own vendor id
// DW1 length field: 18 bits, 0 encodes 2^18 (PCIe 6.0 §6.30.1).
inline constexpr uint32_t kDoeMaxObjectDwords = 1u << 18;

struct DoeResponderConfig {
  uint16_t vendor_id;  // the device's vendor id; the echo protocol is (vendor_id, 0x01)
  bool cdat = false;   // serve CXL CDAT table access (1e98:02)
  bool echo = true;    // serve the vendor-defined echo protocol
  uint32_t mailbox_dwords = 1u << 18;  // capacity of the mailbox (max object length),
                                       // clamped to [2, 2^18]
  DoeFault fault = DoeFault::kNone;
  std::chrono::milliseconds slow_delay{200};  // for kSlow
};

using ViolationSink = std::function<void(std::string reason)>;

class DoeResponder {  // thread-safe? No: the owning SimDevice serialises calls.
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  DoeResponder(DoeResponderConfig cfg, ViolationSink sink);

  // Dword accesses to the registers of the DOE extended capability, offset relative to
  // the capability header: PCI_DOE_CAP, PCI_DOE_CTRL, PCI_DOE_STATUS, PCI_DOE_WRITE, PCI_DOE_READ.
  // Any other offset reads 0 and ignores writes (the header at 0 is the caller's).
  // Note: reading PCI_DOE_READ with no object ready is reported as a violation,
  // so a config dump must not forward that register to the device blindly.
  uint32_t read(uint32_t reg);  // no side effects ever (reading PCI_DOE_READ does not advance)
  void write(uint32_t reg, uint32_t value);
  void reset();                    // FLR / loss of power: abandon everything, idle
  void set_fault(DoeFault fault);  // applies from the next GO; keeps a stuck state

  // --- For tests and status (not part of the register model).
  const DoeResponderConfig& config() const { return cfg_; }
  // Dwords currently allocated for request + response (memory-bound tests).
  size_t allocated_dwords() const { return request_.capacity() + response_.capacity(); }
  // Replaces steady_clock::now for kSlow, so tests need not sleep.
  void set_clock(Clock clock) { clock_ = std::move(clock); }

 private:
  enum class State { kIdle, kBusy, kReady, kError };

  std::chrono::steady_clock::time_point now() const;
  void settle();  // a kSlow response whose time has come becomes ready
  uint32_t status_bits() const;
  uint32_t read_mailbox();
  void write_ctrl(uint32_t value);
  void write_mailbox(uint32_t value);
  void advance_mailbox();
  void go();
  bool request_complete();
  void start_processing();
  void abort();
  void violation(std::string reason) const;
  void append_request(uint32_t dw);

  // Protocol handlers: fill response_ or return false (the request is one the
  // device cannot answer: Error).
  bool respond();
  bool respond_discovery();
  bool respond_cdat();
  void respond_echo();
  std::vector<std::pair<uint16_t, uint8_t>> protocols() const;

  DoeResponderConfig cfg_;
  ViolationSink sink_;
  Clock clock_;
  State state_ = State::kIdle;
  bool stuck_ = false;          // kStuckBusy fired: Busy until reset()
  bool overflowed_ = false;     // the request overran the mailbox: GO is refused
  bool just_consumed_ = false;  // the last response was read to its end
  std::vector<uint32_t> request_;
  std::vector<uint32_t> response_;
  size_t read_pos_ = 0;
  std::chrono::steady_clock::time_point ready_at_{};
};

}  // namespace pcifs::backend::sim
