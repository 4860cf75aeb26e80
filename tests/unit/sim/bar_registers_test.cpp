// The BAR register map (sim/bar_memory.hpp) through SimDevice::bar_read/write:
// scratch, read-to-clear event counter, per-width access counters, ID, RAM.
#include <gtest/gtest.h>

#include "sim/bar_memory.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

class BarRegisters : public ::testing::TestWithParam<unsigned> {  // BAR index of 01:00.0
 protected:
  void SetUp() override { d_ = dev(*backend_, "0000:01:00.0"); }
  unsigned bar() const { return GetParam(); }
  uint64_t count(uint64_t reg) { return bar_rd(*d_, bar(), reg, 8); }
  std::unique_ptr<SimBackend> backend_ = make_default_backend();
  std::shared_ptr<SimDevice> d_;
};

TEST_P(BarRegisters, IdIsConstant) {
  EXPECT_EQ(bar_rd(*d_, bar(), kRegId, 4), kIdValue);
  bar_wr(*d_, bar(), kRegId, 4, 0);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegId, 4), kIdValue);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegId, 1), 0x46u);  // "F", little-endian
}

TEST_P(BarRegisters, ScratchHoldsAnyWidth) {
  bar_wr(*d_, bar(), kRegScratch0, 8, 0x1122334455667788);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegScratch0, 8), 0x1122334455667788u);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegScratch0 + 4, 4), 0x11223344u);
  bar_wr(*d_, bar(), kRegScratch0 + 2, 2, 0xbeef);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegScratch0, 8), 0x11223344beef7788u);
  bar_wr(*d_, bar(), kRegScratch1 + 7, 1, 0xaa);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegScratch1, 8), 0xaa00000000000000u);
}

TEST_P(BarRegisters, EventCountIsReadToClearAndCountsDoorbells) {
  EXPECT_EQ(bar_rd(*d_, bar(), kRegDoorbell, 4), 0u);  // write-only
  bar_wr(*d_, bar(), kRegDoorbell, 1, 0);
  bar_wr(*d_, bar(), kRegDoorbell, 4, 0xffffffff);
  bar_wr(*d_, bar(), kRegDoorbell + 4, 4, 1);
  bar_wr(*d_, bar(), kRegDoorbell, 8, 1);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegEventCount, 8), 4u);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegEventCount, 8), 0u);  // cleared by the read
  bar_wr(*d_, bar(), kRegEventCount, 8, 55);             // writes are ignored
  EXPECT_EQ(bar_rd(*d_, bar(), kRegEventCount, 4), 0u);
}

TEST_P(BarRegisters, OneAccessOfEachWidthCountsOnce) {
  bar_wr(*d_, bar(), kRegAccessCountW1, 8, 0);  // zero all four (counted, then zeroed)
  bar_rd(*d_, bar(), 0x50, 4);                  // one 4-byte access is one access
  bar_wr(*d_, bar(), 0x54, 2, 7);
  bar_rd(*d_, bar(), 0x57, 1);
  bar_rd(*d_, bar(), 0x58, 1);
  // Counted before the value is taken: the reads of the counters count too.
  EXPECT_EQ(count(kRegAccessCountW1), 2u);
  EXPECT_EQ(count(kRegAccessCountW2), 1u);
  EXPECT_EQ(count(kRegAccessCountW4), 1u);
  EXPECT_EQ(count(kRegAccessCountW8), 4u);
  EXPECT_EQ(bar_rd(*d_, bar(), kRegAccessCountW4, 4), 2u);
  bar_wr(*d_, bar(), kRegAccessCountW8, 1, 0xff);
  EXPECT_EQ(count(kRegAccessCountW1), 0u);
  EXPECT_EQ(count(kRegAccessCountW8), 2u);
}

TEST_P(BarRegisters, RestIsPlainRam) {
  uint64_t last = d_->info().resources[bar()].size() - 8;
  EXPECT_EQ(bar_rd(*d_, bar(), 0x80, 8), 0u);  // zero at power-on
  bar_wr(*d_, bar(), 0x80, 8, 0x0102030405060708);
  bar_wr(*d_, bar(), last, 8, 0xa5a5a5a5a5a5a5a5);
  EXPECT_EQ(bar_rd(*d_, bar(), 0x80, 8), 0x0102030405060708u);
  EXPECT_EQ(bar_rd(*d_, bar(), 0x81, 1), 0x07u);
  EXPECT_EQ(bar_rd(*d_, bar(), 0x84, 4), 0x01020304u);
  EXPECT_EQ(bar_rd(*d_, bar(), last, 8), 0xa5a5a5a5a5a5a5a5u);
  EXPECT_EQ(violations(*d_), 0u) << last_violation(*d_);
}

INSTANTIATE_TEST_SUITE_P(Sim, BarRegisters, ::testing::Values(0u, 2u, 4u),
                         [](const auto& p) { return "bar" + std::to_string(p.param); });

TEST(BarRegisters, BarsAreIndependent) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  bar_wr(*d, 0, kRegScratch0, 8, 1);
  bar_wr(*d, 2, kRegScratch0, 8, 2);
  EXPECT_EQ(bar_rd(*d, 0, kRegScratch0, 8), 1u);
  EXPECT_EQ(bar_rd(*d, 2, kRegScratch0, 8), 2u);
  auto other = dev(*backend, "0000:01:00.1");
  EXPECT_EQ(bar_rd(*other, 0, kRegScratch0, 8), 0u);
}

TEST(BarRegisters, ResetClearsRegistersAndRam) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:02:00.0");
  bar_wr(*d, 0, kRegScratch0, 8, 9);
  bar_wr(*d, 0, 0x1000, 4, 0xcafe);
  ASSERT_TRUE(d->reset().ok());
  wr(*d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);  // the owner restores decode
  EXPECT_EQ(bar_rd(*d, 0, kRegScratch0, 8), 0u);
  EXPECT_EQ(bar_rd(*d, 0, 0x1000, 4), 0u) << "PCIe 6.0 §6.6.2: nothing of the previous use";
}

TEST(BarMemory, SmallBarIsPlainRam) {
  BarMemory m(64);
  m.write(kRegId, 4, 0x1234);
  EXPECT_EQ(m.read(kRegId, 4), 0x1234u);
  m.write(kRegDoorbell, 4, 5);
  EXPECT_EQ(m.read(kRegDoorbell, 4), 5u);
}

TEST(BarMemory, PowerLossClearsRam) {
  BarMemory m(1 << 20);
  m.write(0x5000, 8, 77);
  m.reset_registers();
  EXPECT_EQ(m.read(0x5000, 8), 77u);
  m.power_loss();
  EXPECT_EQ(m.read(0x5000, 8), 0u);
}

}  // namespace
}  // namespace pcifs::backend::sim

namespace pcifs::backend::sim {
namespace {

// A run (read_run/write_run) is the same accesses as one call per access:
// same bytes, same counters, same side effects — across registers and RAM.
TEST(BarMemoryRun, RunsEqualSingleAccesses) {
  BarMemory run(1 << 16), single(1 << 16);
  uint32_t seed = 12345;
  auto rnd = [&seed] { return seed = seed * 1103515245u + 12345u; };
  for (int iter = 0; iter < 400; ++iter) {
    const unsigned width = 1u << (rnd() % 4);
    const size_t count = 1 + rnd() % 40;
    const uint64_t offset = (rnd() % ((1 << 16) - count * width)) / width * width;
    const uint64_t start = iter % 4 == 0 ? 0 : offset;  // often through the registers
    if (rnd() % 2) {
      std::vector<uint8_t> data(count * width);
      for (auto& b : data) b = static_cast<uint8_t>(rnd());
      run.write_run(start, width, count, data.data());
      for (size_t i = 0; i < count; ++i) {
        uint64_t v = 0;
        for (unsigned k = 0; k < width; ++k) v |= uint64_t{data[i * width + k]} << (8 * k);
        single.write(start + i * width, width, v);
      }
    } else {
      std::vector<uint8_t> a(count * width), b(count * width);
      run.read_run(start, width, count, a.data());
      for (size_t i = 0; i < count; ++i) {
        const uint64_t v = single.read(start + i * width, width);
        for (unsigned k = 0; k < width; ++k) b[i * width + k] = static_cast<uint8_t>(v >> (8 * k));
      }
      ASSERT_EQ(a, b) << "iteration " << iter;
    }
  }
  for (uint64_t reg = 0; reg < kRegisterBlockEnd; reg += 8) {
    EXPECT_EQ(run.read(reg, 8), single.read(reg, 8)) << "register " << reg;
  }
}

// Negative control: a run that skipped the per-access counting would differ.
TEST(BarMemoryRun, CountersSeeEveryAccessOfARun) {
  BarMemory m(1 << 16);
  std::vector<uint8_t> buf(4096);
  m.read_run(0x1000, 8, 512, buf.data());
  EXPECT_EQ(m.read(kRegAccessCountW8, 8), 513u);  // 512 + this read
}

TEST(SimDeviceRun, BlockedRunCountsAViolationPerAccess) {
  auto backend = make_default_backend();
  auto d = testing::dev(*backend, "0000:01:00.0");
  ASSERT_TRUE(d->set_power_state(PowerState::kD3hot).ok());
  const uint64_t before = d->violations().value_or(0);
  std::vector<uint8_t> buf(64);
  auto r = d->bar_read_run(2, 0x1000, 8, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 64u);
  EXPECT_EQ(d->violations().value_or(0) - before, 8u);  // as 8 separate reads would
  EXPECT_EQ(buf, std::vector<uint8_t>(64, 0xff));       // master abort
}

}  // namespace
}  // namespace pcifs::backend::sim
