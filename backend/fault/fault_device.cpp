#include "fault/fault_device.hpp"

#include <thread>
#include <utility>

namespace pcifs::backend::fault {

namespace {

size_t index(OpClass c) { return static_cast<size_t>(c); }

// SplitMix64: spreads a (seed, class) pair over the RNG's state, so that nearby
// seeds still give unrelated sequences.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::string_view to_string(OpClass c) {
  switch (c) {
    case OpClass::kConfigRead: return "config_read";
    case OpClass::kConfigWrite: return "config_write";
    case OpClass::kBarRead: return "bar_read";
    case OpClass::kBarWrite: return "bar_write";
    case OpClass::kRom: return "rom";
    case OpClass::kPower: return "power";
    case OpClass::kReset: return "reset";
    case OpClass::kRemove: return "remove";
  }
  return "?";
}

Fault Fault::next(uint64_t n, Errno e) {
  Fault f;
  f.error = e;
  f.fail_next = n;
  return f;
}

Fault Fault::always(Errno e) {
  Fault f;
  f.error = e;
  f.fail_always = true;
  return f;
}

Fault Fault::random(double p, Errno e) {
  Fault f;
  f.error = e;
  f.probability = p;
  return f;
}

Fault Fault::delayed(std::chrono::nanoseconds d) {
  Fault f;
  f.delay = d;
  return f;
}

FaultDevice::FaultDevice(std::shared_ptr<Device> inner, uint64_t seed) : inner_(std::move(inner)) {
  MutexLock lock(mu_);
  for (size_t i = 0; i < kOpClassCount; ++i) state_[i].rng.seed(mix(seed ^ mix(i)));
}

void FaultDevice::set_fault(OpClass c, const Fault& f) {
  MutexLock lock(mu_);
  state_[index(c)].fault = f;
}

void FaultDevice::clear_fault(OpClass c) { set_fault(c, Fault{}); }

void FaultDevice::clear_all_faults() {
  MutexLock lock(mu_);
  for (auto& s : state_) s.fault = Fault{};
}

void FaultDevice::set_hook(OpClass c, FaultHook hook) {
  MutexLock lock(mu_);
  state_[index(c)].hook = std::move(hook);
}

uint64_t FaultDevice::calls(OpClass c) const {
  MutexLock lock(mu_);
  return state_[index(c)].calls;
}

uint64_t FaultDevice::injected_failures(OpClass c) const {
  MutexLock lock(mu_);
  return state_[index(c)].failures;
}

void FaultDevice::reset_counters() {
  MutexLock lock(mu_);
  for (auto& s : state_) s.calls = s.failures = 0;
}

bool FaultDevice::draw(ClassState& s) {
  // 53 random bits -> [0, 1): the same on every standard library, unlike
  // std::uniform_real_distribution, so a seed means the same thing everywhere.
  double u = static_cast<double>(s.rng() >> 11) * 0x1.0p-53;
  return u < s.fault.probability;
}

FaultDevice::Decision FaultDevice::decide(OpClass c) {
  MutexLock lock(mu_);
  ClassState& s = state_[index(c)];
  ++s.calls;
  Decision d{std::nullopt, s.fault.delay, s.hook};
  bool fail = false;
  if (s.fault.fail_next > 0) {
    --s.fault.fail_next;
    fail = true;
  } else if (s.fault.fail_always) {
    fail = true;
  } else if (s.fault.probability > 0.0) {
    fail = draw(s);
  }
  if (fail) {
    ++s.failures;
    d.error = s.fault.error;
  }
  return d;
}

Result<void> FaultDevice::enter(OpClass c) {
  Decision d = decide(c);
  if (d.delay.count() > 0) std::this_thread::sleep_for(d.delay);
  if (d.hook) d.hook(c);
  if (d.error) return *d.error;
  return Ok();
}

Result<uint32_t> FaultDevice::config_read(uint32_t offset, unsigned width) {
  PCIFS_TRY(enter(OpClass::kConfigRead));
  return inner_->config_read(offset, width);
}

Result<void> FaultDevice::config_write(uint32_t offset, unsigned width, uint32_t value) {
  PCIFS_TRY(enter(OpClass::kConfigWrite));
  return inner_->config_write(offset, width, value);
}

Result<void> FaultDevice::config_read_block(uint32_t offset, std::span<uint8_t> out) {
  // One check for the whole block, then the inner device's own block read, so a
  // sysfs device keeps its single pread.
  PCIFS_TRY(enter(OpClass::kConfigRead));
  return inner_->config_read_block(offset, out);
}

Result<uint64_t> FaultDevice::bar_read(unsigned bar, uint64_t offset, unsigned width) {
  PCIFS_TRY(enter(OpClass::kBarRead));
  return inner_->bar_read(bar, offset, width);
}

Result<void> FaultDevice::bar_write(unsigned bar, uint64_t offset, unsigned width, uint64_t value) {
  PCIFS_TRY(enter(OpClass::kBarWrite));
  return inner_->bar_write(bar, offset, width, value);
}

Result<void> FaultDevice::rom_enable(bool on) {
  PCIFS_TRY(enter(OpClass::kRom));
  return inner_->rom_enable(on);
}

Result<size_t> FaultDevice::rom_read(uint64_t offset, std::span<uint8_t> out) {
  PCIFS_TRY(enter(OpClass::kRom));
  return inner_->rom_read(offset, out);
}

Result<void> FaultDevice::set_power_state(PowerState target) {
  PCIFS_TRY(enter(OpClass::kPower));
  return inner_->set_power_state(target);
}

Result<void> FaultDevice::reset() {
  PCIFS_TRY(enter(OpClass::kReset));
  return inner_->reset();
}

Result<void> FaultDevice::remove() {
  PCIFS_TRY(enter(OpClass::kRemove));
  return inner_->remove();
}

}  // namespace pcifs::backend::fault
