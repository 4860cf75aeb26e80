// The expansion ROM: images generated from the description parse as PCI
// Firmware 3.0 §5.1 says; rom_read needs ROM decode on.
#include <gtest/gtest.h>

#include "sim/rom_image.hpp"
#include "unit/sim/sim_test_util.hpp"

namespace pcifs::backend::sim {
namespace {

using namespace testing;

struct Image {
  uint32_t offset, length;
  uint16_t vendor, device;
  uint8_t code_type;
  bool last;
};

uint32_t le(const std::vector<uint8_t>& b, size_t at, unsigned width) {
  uint32_t v = 0;
  for (unsigned i = 0; i < width; ++i) v |= uint32_t{b[at + i]} << (8 * i);
  return v;
}

// An independent parser, the way the core or a firmware would walk the chain.
std::vector<Image> parse(const std::vector<uint8_t>& rom) {
  std::vector<Image> out;
  for (uint32_t at = 0; at + 0x1a < rom.size();) {
    if (le(rom, at, 2) != 0xaa55) break;
    uint32_t pcir = at + le(rom, at + 0x18, 2);
    if (std::string(rom.begin() + pcir, rom.begin() + pcir + 4) != "PCIR") break;
    Image img{at,
              le(rom, pcir + 0x10, 2) * 512,
              static_cast<uint16_t>(le(rom, pcir + 4, 2)),
              static_cast<uint16_t>(le(rom, pcir + 6, 2)),
              rom[pcir + 0x14],
              (rom[pcir + 0x15] & 0x80) != 0};
    out.push_back(img);
    if (img.last || img.length == 0) break;
    at += img.length;
  }
  return out;
}

std::vector<uint8_t> read_rom(SimDevice& d) {
  std::vector<uint8_t> rom(d.info().resources[6].size());
  EXPECT_TRUE(d.rom_enable(true).ok());
  auto n = d.rom_read(0, rom);
  EXPECT_TRUE(n.ok());
  EXPECT_EQ(n.value_or(0), rom.size());
  EXPECT_TRUE(d.rom_enable(false).ok());
  return rom;
}

TEST(Rom, Endpoint0HasX86ThenEfi) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  auto rom = read_rom(*d);
  auto images = parse(rom);
  ASSERT_EQ(images.size(), 2u);
  EXPECT_EQ(images[0].offset, 0u);
  EXPECT_EQ(images[0].length, 0x8000u);
  EXPECT_EQ(images[0].code_type, kRomCodeX86);
  EXPECT_FALSE(images[0].last);
  EXPECT_EQ(images[1].offset, 0x8000u);
  EXPECT_EQ(images[1].code_type, kRomCodeEfi);
  EXPECT_TRUE(images[1].last);
  EXPECT_EQ(images[1].vendor, 0x1b36);
  EXPECT_EQ(images[1].device, 0x10f0);
  EXPECT_EQ(rom[0xc000], 0xff);  // past the last image: erased
  uint8_t sum = 0;
  for (uint32_t i = 0; i < 0x8000; ++i) sum = static_cast<uint8_t>(sum + rom[i]);
  EXPECT_EQ(sum, 0) << "legacy image checksum";
  EXPECT_EQ(violations(*d), 0u) << last_violation(*d);
}

TEST(Rom, Endpoint2HasThreeImages) {
  auto backend = make_default_backend();
  auto images = parse(read_rom(*dev(*backend, "0000:02:00.0")));
  ASSERT_EQ(images.size(), 3u);
  EXPECT_EQ(images[2].offset, 0x30000u);
  EXPECT_TRUE(images[2].last);
  EXPECT_FALSE(images[1].last);
  EXPECT_EQ(images[2].device, 0x10f2);
}

TEST(Rom, ReadsAreShortAtTheEndAndEmptyPastIt) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  ASSERT_TRUE(d->rom_enable(true).ok());
  std::vector<uint8_t> buf(64);
  EXPECT_EQ(d->rom_read(0x10000 - 16, buf).value_or(0), 16u);
  EXPECT_EQ(d->rom_read(0x10000, buf).value_or(99), 0u);
  EXPECT_EQ(violations(*d), 0u);
}

TEST(Rom, ReadWithDecodeOffIsAViolationAndReadsFf) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.0");
  std::vector<uint8_t> buf(4, 0);
  EXPECT_EQ(d->rom_read(0, buf).value_or(0), 4u);
  EXPECT_EQ(buf, std::vector<uint8_t>(4, 0xff));
  EXPECT_EQ(violations(*d), 1u);
  EXPECT_EQ(last_violation(*d), "rom read while ROM decode is off");
}

TEST(Rom, NoRomIsAnError) {
  auto backend = make_default_backend();
  auto d = dev(*backend, "0000:01:00.1");
  std::vector<uint8_t> buf(4);
  EXPECT_EQ(d->rom_enable(true).error(), Errno(ENXIO));
  EXPECT_EQ(d->rom_read(0, buf).error(), Errno(ENXIO));
  EXPECT_FALSE(d->info().has_rom());
}

}  // namespace
}  // namespace pcifs::backend::sim
