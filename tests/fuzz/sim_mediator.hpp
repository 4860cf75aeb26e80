// A Mediator over the simulated default device set for the harnesses that
// drive device files (config, BARs, DOE): built fresh per input where the
// harness wants every input to start from power-on, with the simulator's
// violation oracle checked at the end. Single-threaded use by one harness.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_input.hpp"
#include "pcifs/mediator.hpp"
#include "sim/device_set.hpp"
#include "sim/sim_backend.hpp"

namespace pcifs::fuzz {

// The default set's functions, in BDF order (sim/sim_backend.hpp).
inline const std::array<Bdf, 6> kDevices = {
    *Bdf::parse("0000:00:00.0"), *Bdf::parse("0000:00:01.0"), *Bdf::parse("0000:00:02.0"),
    *Bdf::parse("0000:01:00.0"), *Bdf::parse("0000:01:00.1"), *Bdf::parse("0000:02:00.0")};

inline const Caller kRoot{100, 0, 0};
inline const Caller kRoot2{101, 0, 0};
inline const Caller kUser{200, 1000, 1000};

class NoSink : public RevocationSink {
 public:
  void invalidate_mappings(const Bdf&) override {}
};

// The default set, without its faulty DOE mailbox unless asked for: a
// mailbox that never answers makes every Mediator wait out the DOE timeout
// for Discovery.
inline std::string device_set_json(bool faulty_doe) {
  auto j = nlohmann::json::parse(backend::sim::default_set_json());
  if (!faulty_doe) {
    for (auto& d : j["devices"]) {
      if (!d.contains("capabilities") || !d["capabilities"].contains("doe")) continue;
      for (auto& m : d["capabilities"]["doe"]) m.erase("fault");
    }
  }
  return j.dump();
}

inline std::vector<backend::sim::DeviceSpec> specs(bool faulty_doe) {
  std::string error;
  auto s = backend::sim::parse_device_set(device_set_json(faulty_doe), &error);
  if (!s) fail("device set: " + error);
  return std::move(*s);
}

class SimMediator {
 public:
  explicit SimMediator(bool faulty_doe = false,
                       std::chrono::milliseconds doe_timeout = std::chrono::milliseconds(20)) {
    quiet_logs();
    // Parsed once; the devices are built afresh for every Mediator.
    static const std::vector<backend::sim::DeviceSpec> kSpecs[2] = {specs(false), specs(true)};
    sim_ = std::make_shared<backend::sim::SimBackend>(
        "sim (fuzz)", backend::sim::build_devices(kSpecs[faulty_doe ? 1 : 0]));
    MediatorOptions o;
    o.doe_timeout = doe_timeout;
    med_ = std::make_unique<Mediator>(sim_, o);
    med_->set_revocation_sink(&sink_);
    view_ = med_->add_view(ViewPolicy{});
  }
  ~SimMediator() {
    for (auto& [key, h] : handles_) med_->release(h);
    med_.reset();
  }
  SimMediator(const SimMediator&) = delete;
  SimMediator& operator=(const SimMediator&) = delete;

  Mediator& med() { return *med_; }
  ViewId view() const { return view_; }

  // One cached handle per (caller, file, write): opened on first use.
  Result<HandleId> handle(const Caller& c, const FileRef& ref, bool write, bool nonblock = false) {
    const auto key =
        std::make_tuple(c.pid, ref.bdf, static_cast<int>(ref.kind), ref.index, write, nonblock);
    if (auto it = handles_.find(key); it != handles_.end()) return it->second;
    auto h = med_->open(view_, c, ref, OpenFlags{true, write, nonblock});
    if (h) handles_[key] = *h;
    return h;
  }
  // Releases one cached handle (the n-th, modulo their number).
  void release_one(size_t n) {
    if (handles_.empty()) return;
    auto it = handles_.begin();
    std::advance(it, static_cast<long>(n % handles_.size()));
    med_->release(it->second);
    handles_.erase(it);
  }

  // As the FUSE layer does: try first, wait only when the try says so.
  Result<size_t> read(HandleId h, uint64_t off, std::span<uint8_t> out) {
    auto r = med_->try_read(h, off, out);
    if (!r && r.error().value() == kWouldWait) return med_->read(h, off, out);
    return r;
  }
  Result<size_t> write(HandleId h, uint64_t off, std::span<const uint8_t> in) {
    auto r = med_->try_write(h, off, in);
    if (!r && r.error().value() == kWouldWait) return med_->write(h, off, in);
    return r;
  }

  // Writes `data` at `off` of a file through the caller's cached handle.
  void write_file(const Caller& c, const FileRef& ref, uint64_t off,
                  std::span<const uint8_t> data) {
    if (auto h = handle(c, ref, true)) (void)write(*h, off, data);
  }
  // A root write to power_state (the text picked from a few, valid or not)
  // or reset.
  void control_write(const Bdf& b, FileKind k, uint8_t pick) {
    static constexpr std::array<std::string_view, 6> kPower = {"D0",   "D3hot", "D3cold",
                                                               "D0\n", "D1",    ""};
    const std::string_view text = k == FileKind::kReset ? "1" : kPower[pick % kPower.size()];
    write_file(kRoot, FileRef{b, k, 0, {}}, 0,
               {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  }

  // Every device's oracle is still at zero.
  void check_oracle() const {
    for (const auto& b : kDevices) {
      auto d = sim_->find(b);
      if (!d) continue;  // removed
      if (d->violations().value_or(0) != 0) {
        const auto log = d->violation_log();
        fail(b.str() + ": oracle violation: " + (log.empty() ? "" : log.back()));
      }
    }
  }

 private:
  std::shared_ptr<backend::sim::SimBackend> sim_;
  NoSink sink_;
  std::unique_ptr<Mediator> med_;
  ViewId view_ = 0;
  std::map<std::tuple<pid_t, Bdf, int, uint16_t, bool, bool>, HandleId> handles_;
};

}  // namespace pcifs::fuzz
