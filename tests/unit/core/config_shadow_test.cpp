// The config shadow [S15]: which registers are served from memory, how the
// shadow is verified, and that volatile state is always read from the device
// (each shadow check paired with a register that must stay live).
#include "core/config_shadow.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include "core/config_space.hpp"
#include "sim/sim_backend.hpp"
#include "sim/sim_device.hpp"

namespace pcifs::core {
namespace {

class ConfigShadowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = backend::sim::make_default_backend();
    dev_ = backend_->find(*Bdf::parse("0000:01:00.0"));  // PCIe endpoint: PM, MSI-X, DSN, DOE
    ASSERT_NE(dev_, nullptr);
    image_.resize(dev_->info().config_size);
    ASSERT_TRUE(dev_->config_read_block(0, image_).ok());
    caps_ = walk_capabilities(image_);
  }
  // The device's config, counting the bytes asked of it.
  RawRead counted() {
    return [this](uint32_t off, std::span<uint8_t> out) {
      device_bytes_ += out.size();
      return dev_->config_read_block(off, out);
    };
  }
  const CapInfo& cap(uint16_t id, bool extended) {
    for (const auto& c : caps_) {
      if (c.id == id && c.extended == extended) return c;
    }
    ADD_FAILURE() << "no capability " << id;
    return caps_.front();
  }

  std::shared_ptr<backend::sim::SimBackend> backend_;
  std::shared_ptr<backend::sim::SimDevice> dev_;
  std::vector<uint8_t> image_;
  std::vector<CapInfo> caps_;
  size_t device_bytes_ = 0;
};

TEST_F(ConfigShadowTest, FixedRegistersAreShadowedAndVolatileOnesAreNot) {
  auto m = immutable_config_bytes(image_, dev_->info().header_type, caps_);
  for (uint32_t off : {0u, 1u, 2u, 3u, 8u, 9u, 10u, 11u, 14u, 0x2cu, 0x2fu, 0x34u, 0x3du})
    EXPECT_TRUE(m[off]) << std::hex << off;
  for (uint32_t off : {4u, 5u, 6u, 7u, 0x0cu, 0x0du, 0x0fu, 0x10u, 0x30u, 0x3cu})
    EXPECT_FALSE(m[off]) << "volatile at " << std::hex << off;
  const CapInfo& pcie = cap(PCI_CAP_ID_EXP, false);
  EXPECT_TRUE(m[pcie.offset] && m[pcie.offset + 1]) << "ID and next";
  EXPECT_TRUE(m[pcie.offset + PCI_EXP_LNKCAP]);
  EXPECT_FALSE(m[pcie.offset + PCI_EXP_DEVCAP]) << "carries the captured slot power limit";
  EXPECT_FALSE(m[pcie.offset + PCI_EXP_DEVCTL]);
  EXPECT_FALSE(m[pcie.offset + PCI_EXP_LNKSTA]);
  const CapInfo& msix = cap(PCI_CAP_ID_MSIX, false);
  EXPECT_FALSE(m[msix.offset + PCI_MSIX_FLAGS + 1]) << "MSI-X Enable lives here";
  EXPECT_TRUE(m[msix.offset + PCI_MSIX_TABLE]);
  const CapInfo& dsn = cap(PCI_EXT_CAP_ID_DSN, true);
  EXPECT_TRUE(m[dsn.offset] && m[dsn.offset + 4] && m[dsn.offset + 11]);
  const CapInfo& doe = cap(PCI_EXT_CAP_ID_DOE, true);
  EXPECT_TRUE(m[doe.offset]);
  EXPECT_FALSE(m[doe.offset + PCI_DOE_STATUS]) << "mailbox state";
}

TEST_F(ConfigShadowTest, ReadsFewerDeviceBytesWithTheSameResult) {
  ConfigSpace plain(dev_->info(), image_);
  ConfigSpace shadowed(dev_->info(), image_, counted());
  ASSERT_GT(shadowed.shadow().shadowed_bytes(), 64u);
  EXPECT_EQ(plain.shadow().shadowed_bytes(), 0u) << "no reread: no shadow";
  // Whole dwords only: Header Type is fixed, but its dword holds BIST and the
  // latency timer, so reading it from the shadow would split one access in two.
  EXPECT_TRUE(immutable_config_bytes(image_, dev_->info().header_type, caps_)[PCI_HEADER_TYPE]);
  EXPECT_FALSE(shadowed.shadow().covers(PCI_HEADER_TYPE));
  EXPECT_TRUE(shadowed.shadow().covers(PCI_CLASS_REVISION));
  std::vector<uint8_t> a(image_.size()), b(image_.size());
  ASSERT_TRUE(plain.read(0, a, {}, counted()).ok());
  const size_t plain_bytes = device_bytes_;
  device_bytes_ = 0;
  ASSERT_TRUE(shadowed.read(0, b, {}, counted()).ok());
  EXPECT_EQ(a, b);
  EXPECT_LT(device_bytes_, plain_bytes);
}

TEST_F(ConfigShadowTest, VolatileRegistersAreReadAtTheTimeOfTheRead) {
  ConfigSpace space(dev_->info(), image_, counted());
  uint32_t cmd_off = PCI_COMMAND;
  ASSERT_FALSE(space.shadow().covers(cmd_off));
  // Change Command on the device behind the ConfigSpace's back.
  auto before = dev_->config_read(PCI_COMMAND, 2);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(dev_->config_write(PCI_COMMAND, 2, *before ^ PCI_COMMAND_SERR).ok());
  std::vector<uint8_t> out(64);
  ASSERT_TRUE(space.read(0, out, {}, counted()).ok());
  EXPECT_EQ(cfg_read(out, PCI_COMMAND, 2), *before ^ PCI_COMMAND_SERR);
}

TEST_F(ConfigShadowTest, AByteThatChangesBetweenTheTwoReadsIsNotShadowed) {
  size_t calls = 0;
  auto flaky = [&](uint32_t off, std::span<uint8_t> out) -> Result<void> {
    PCIFS_TRY(dev_->config_read_block(off, out));
    if (off <= PCI_REVISION_ID && PCI_REVISION_ID < off + out.size())
      out[PCI_REVISION_ID - off] ^= 1;  // not what attach saw
    ++calls;
    return Ok();
  };
  auto s = ConfigShadow::build(dev_->info(), image_, caps_, flaky);
  EXPECT_GT(calls, 0u);
  EXPECT_FALSE(s.covers(PCI_REVISION_ID));
  EXPECT_TRUE(s.covers(PCI_VENDOR_ID)) << "the rest still verified";
}

TEST_F(ConfigShadowTest, NoShadowWhenTheRereadFailsOrTheIdsDisagree) {
  auto failing = [](uint32_t, std::span<uint8_t>) -> Result<void> { return Errno(EIO); };
  EXPECT_EQ(ConfigShadow::build(dev_->info(), image_, caps_, failing).shadowed_bytes(), 0u);
  backend::DeviceInfo other = dev_->info();
  other.device ^= 1;
  EXPECT_EQ(ConfigShadow::build(other, image_, caps_, counted()).shadowed_bytes(), 0u);
  EXPECT_GT(ConfigShadow::build(dev_->info(), image_, caps_, counted()).shadowed_bytes(), 0u)
      << "negative control";
}

TEST_F(ConfigShadowTest, ADeviceThatReadsAllOnesShowsAllOnesNotItsOldIds) {
  ConfigSpace space(dev_->info(), image_, counted());
  ASSERT_TRUE(space.shadow().covers(PCI_VENDOR_ID));
  auto gone = [](uint32_t, std::span<uint8_t> out) -> Result<void> {
    std::fill(out.begin(), out.end(), uint8_t{0xff});
    return Ok();
  };
  std::vector<uint8_t> out(64);
  ASSERT_TRUE(space.read(0, out, {}, gone).ok());
  EXPECT_EQ(cfg_read(out, PCI_VENDOR_ID, 2), 0xffffu);
  EXPECT_EQ(cfg_read(out, PCI_CLASS_REVISION, 4), 0xffffffffu);
  // Negative control: a live device shows its IDs.
  ASSERT_TRUE(space.read(0, out, {}, counted()).ok());
  EXPECT_EQ(cfg_read(out, PCI_VENDOR_ID, 2), dev_->info().vendor);
}

TEST(ConfigShadowIde, AnIdeControllersClassCodeStaysLive) {
  std::vector<uint8_t> image(256, 0);
  image[PCI_CLASS_DEVICE] = 0x01;  // sub-class IDE
  image[PCI_CLASS_DEVICE + 1] = 0x01;
  auto m = immutable_config_bytes(image, PCI_HEADER_TYPE_NORMAL, {});
  EXPECT_FALSE(m[PCI_CLASS_PROG]);
  EXPECT_TRUE(m[PCI_VENDOR_ID]);
  image[PCI_CLASS_DEVICE] = 0x06;  // SATA: fixed
  EXPECT_TRUE(immutable_config_bytes(image, PCI_HEADER_TYPE_NORMAL, {})[PCI_CLASS_PROG]);
}

}  // namespace
}  // namespace pcifs::core
