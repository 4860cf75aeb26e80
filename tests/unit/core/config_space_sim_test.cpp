// ConfigSpace against the simulator (the reference): differential reads over
// the whole default set, and proof that what must never reach the device
// (BAR sizing, DOE, PowerState, Initiate FLR) does not.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "core/config_space.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

struct Attached {
  std::shared_ptr<backend::sim::SimDevice> dev;
  std::unique_ptr<ConfigSpace> space;
};

class ConfigSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = backend::sim::make_default_backend();
    for (const auto& d : backend_->devices()) {
      auto sim = backend_->find(d->info().bdf);
      ASSERT_NE(sim, nullptr);
      std::vector<uint8_t> image = raw_config(*sim);
      attached_.push_back({sim, std::make_unique<ConfigSpace>(sim->info(), image)});
    }
    ASSERT_EQ(attached_.size(), 6u);
  }
  static std::vector<uint8_t> raw_config(backend::Device& d) {
    std::vector<uint8_t> c(d.info().config_size);
    EXPECT_TRUE(d.config_read_block(0, c).ok());
    return c;
  }
  static RawRead raw(backend::Device& d) {
    return [&d](uint32_t off, std::span<uint8_t> out) { return d.config_read_block(off, out); };
  }
  static RawReadReg raw_reg(backend::Device& d) {
    return [&d](uint32_t off, unsigned w) { return d.config_read(off, w); };
  }
  static RawWriteReg raw_write(backend::Device& d) {
    return [&d](uint32_t off, unsigned w, uint32_t v) { return d.config_write(off, w, v); };
  }
  static Result<size_t> write(Attached& a, uint32_t off, unsigned width, uint32_t v) {
    std::vector<uint8_t> b(width);
    for (unsigned i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    auto plan = a.space->plan_write(off, b, raw_reg(*a.dev));
    if (!plan) return plan.error();
    return a.space->apply_plan(*plan, raw_write(*a.dev));
  }
  static uint32_t read32(Attached& a, uint32_t off) {
    std::array<uint8_t, 4> b{};
    EXPECT_EQ(a.space->read(off, b, {}, raw(*a.dev)).value_or(0), 4u);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }
  Attached& by_bdf(const char* bdf) {
    for (auto& a : attached_) {
      if (a.dev->info().bdf == *Bdf::parse(bdf)) return a;
    }
    ADD_FAILURE() << bdf;
    return attached_.front();
  }
  void TearDown() override {
    for (auto& a : attached_) {
      EXPECT_EQ(a.dev->violations(), std::optional<uint64_t>(0)) << a.dev->info().bdf.str();
    }
  }

  std::unique_ptr<backend::sim::SimBackend> backend_;
  std::vector<Attached> attached_;
};

TEST_F(ConfigSimTest, ReadsEqualDeviceEverywhereAtAttach) {
  for (auto& a : attached_) {
    const auto want = raw_config(*a.dev);
    for (size_t len : {1u, 2u, 3u, 4u, 7u, 64u}) {
      for (uint32_t off = 0; off < want.size(); off += (len == 64 ? 1 : 3)) {
        std::vector<uint8_t> got(len);
        auto n = a.space->read(off, got, {}, raw(*a.dev));
        ASSERT_TRUE(n.ok());
        ASSERT_EQ(*n, std::min<size_t>(len, want.size() - off));
        ASSERT_TRUE(
            std::equal(got.begin(), got.begin() + static_cast<long>(*n), want.begin() + off))
            << a.dev->info().bdf.str() << " " << off << "+" << len;
      }
    }
  }
}

TEST_F(ConfigSimTest, SizingEveryBarKindNeverReachesDevice) {
  int sized = 0;
  for (auto& a : attached_) {
    const auto before = raw_config(*a.dev);
    const auto& res = a.dev->info().resources;
    bool bridge = a.dev->info().is_bridge();
    std::vector<std::pair<uint32_t, size_t>> regs;  // (config offset, resource index)
    for (size_t i = 0; i < (bridge ? 2u : 6u); ++i)
      regs.emplace_back(PCI_BASE_ADDRESS_0 + 4 * i, i);
    regs.emplace_back(bridge ? PCI_ROM_ADDRESS1 : PCI_ROM_ADDRESS, 6);
    for (auto [off, idx] : regs) {
      uint32_t assigned = read32(a, off);
      ASSERT_EQ(*write(a, off, 4, 0xffffffff), 4u);
      uint32_t mask = read32(a, off);
      if (res[idx].size() != 0) {
        uint32_t low_flags = idx == 6 ? 0x1 : res[idx].is_io() ? 0x3 : 0xf;
        EXPECT_EQ(mask & ~low_flags, static_cast<uint32_t>(~(res[idx].size() - 1)) & ~low_flags)
            << a.dev->info().bdf.str() << " reg " << off;
        EXPECT_EQ(mask & low_flags & ~1u, assigned & low_flags & ~1u);  // type bits as hardware
        ++sized;
      }
      ASSERT_EQ(*write(a, off, 4, assigned), 4u);
      EXPECT_EQ(read32(a, off), assigned);
    }
    EXPECT_EQ(raw_config(*a.dev), before) << a.dev->info().bdf.str();
  }
  EXPECT_EQ(sized, 7);  // 64-bit, 32-bit, I/O and ROM BARs of the default set
}

TEST_F(ConfigSimTest, Upper64BitHalfSizesToAllOnes) {
  Attached& a = by_bdf("0000:01:00.0");
  ASSERT_EQ(*write(a, PCI_BASE_ADDRESS_0, 4, 0xffffffff), 4u);
  ASSERT_EQ(*write(a, PCI_BASE_ADDRESS_1, 4, 0xffffffff), 4u);
  EXPECT_EQ(read32(a, PCI_BASE_ADDRESS_0), 0xfff0000cu);  // 1 MiB, 64-bit, prefetchable
  EXPECT_EQ(read32(a, PCI_BASE_ADDRESS_1), 0xffffffffu);
}

TEST_F(ConfigSimTest, DoeNeverWrittenThroughConfig) {
  Attached& a = by_bdf("0000:02:00.0");
  ASSERT_EQ(a.space->doe_offsets().size(), 2u);
  const auto before = raw_config(*a.dev);
  for (uint16_t doe : a.space->doe_offsets()) {
    ASSERT_TRUE(write(a, doe + PCI_DOE_WRITE, 4, 0x00010001).ok());
    ASSERT_TRUE(write(a, doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_GO).ok());
    ASSERT_TRUE(write(a, doe + PCI_DOE_CTRL, 4, PCI_DOE_CTRL_ABORT).ok());
    ASSERT_TRUE(write(a, doe, 4, 0).ok());
  }
  EXPECT_EQ(raw_config(*a.dev), before);  // no object queued, no abort, nothing
}

TEST_F(ConfigSimTest, PowerStateNeverChangesThroughConfig) {
  for (auto& a : attached_) {
    auto pm = a.space->pm_offset();
    if (!pm) continue;
    ASSERT_TRUE(write(a, *pm + PCI_PM_CTRL, 2, 0x0003).ok());
    ASSERT_TRUE(write(a, *pm + PCI_PM_CTRL, 1, 0x03).ok());
    EXPECT_EQ(a.dev->physical_power_state(), PowerState::kD0);
    EXPECT_EQ(a.dev->config_read(*pm + PCI_PM_CTRL, 2).value_or(~0u) & PCI_PM_CTRL_STATE_MASK, 0u);
  }
}

TEST_F(ConfigSimTest, InitiateFlrDropped) {
  Attached& a = by_bdf("0000:01:00.0");
  ASSERT_TRUE(a.dev->bar_write(0, 0x0, 8, 0x1234).ok());
  auto exp = a.space->pcie_offset();
  ASSERT_TRUE(exp.has_value());
  uint32_t devctl = a.dev->config_read(*exp + PCI_EXP_DEVCTL, 2).value_or(0);
  ASSERT_TRUE(write(a, *exp + PCI_EXP_DEVCTL, 2, devctl | PCI_EXP_DEVCTL_BCR_FLR).ok());
  // A reset would have cleared the scratch register and the command register.
  EXPECT_EQ(a.dev->bar_read(0, 0x0, 8).value_or(0), 0x1234u);
  EXPECT_NE(a.dev->config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MEMORY, 0u);
}

TEST_F(ConfigSimTest, WritableRegistersReachDevice) {
  Attached& a = by_bdf("0000:01:00.1");
  ASSERT_TRUE(write(a, PCI_INTERRUPT_LINE, 1, 0x0b).ok());
  ASSERT_TRUE(write(a, PCI_CACHE_LINE_SIZE, 1, 0x10).ok());
  EXPECT_EQ(a.dev->config_read(PCI_INTERRUPT_LINE, 1).value_or(0), 0x0bu);
  EXPECT_EQ(a.dev->config_read(PCI_CACHE_LINE_SIZE, 1).value_or(0), 0x10u);
  ASSERT_TRUE(write(a, PCI_VENDOR_ID, 2, 0xffff).ok());  // RO: dropped, still "succeeds"
  EXPECT_EQ(a.dev->config_read(PCI_VENDOR_ID, 2).value_or(0), 0x1b36u);
}

TEST_F(ConfigSimTest, MemoryDecodeOffReportedBeforeDeviceWrite) {
  Attached& a = by_bdf("0000:01:00.0");
  uint32_t cmd = a.dev->config_read(PCI_COMMAND, 2).value_or(0);
  ASSERT_NE(cmd & PCI_COMMAND_MEMORY, 0u);
  std::vector<uint8_t> b{static_cast<uint8_t>(cmd & ~uint32_t{PCI_COMMAND_MEMORY}),
                         static_cast<uint8_t>(cmd >> 8)};
  auto plan = a.space->plan_write(PCI_COMMAND, b, raw_reg(*a.dev));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->memory_decode, std::optional<bool>(false));
  EXPECT_NE(a.dev->config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MEMORY, 0u);
  ASSERT_TRUE(a.space->apply_plan(*plan, raw_write(*a.dev)).ok());
  EXPECT_EQ(a.dev->config_read(PCI_COMMAND, 2).value_or(0) & PCI_COMMAND_MEMORY, 0u);
}

TEST_F(ConfigSimTest, LayoutMatchesDefaultSet) {
  Attached& ep = by_bdf("0000:01:00.0");
  EXPECT_TRUE(ep.space->pm_offset().has_value());
  EXPECT_TRUE(ep.space->pcie_offset().has_value());
  EXPECT_EQ(ep.space->doe_offsets().size(), 1u);
  EXPECT_EQ(by_bdf("0000:01:00.1").space->doe_offsets().size(), 0u);
  EXPECT_EQ(by_bdf("0000:00:00.0").space->pm_offset(), std::nullopt);
}

}  // namespace
}  // namespace pcifs::core
