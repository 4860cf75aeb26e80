// Request validation (SPEC S8 "Bad input") and the protocol allow-list.
#include "core/doe_object.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace pcifs::core {
namespace {

std::vector<uint8_t> object_bytes(size_t bytes, uint32_t dw1) {
  std::vector<uint8_t> v(bytes, 0xab);
  if (bytes >= 4) std::memset(v.data(), 0, 4);
  if (bytes >= 8) {
    for (int i = 0; i < 4; ++i)
      v[4 + static_cast<size_t>(i)] = static_cast<uint8_t>(dw1 >> (8 * i));
  }
  return v;
}

struct SizeCase {
  const char* name;
  size_t bytes;
  uint32_t dw1;
  int err;  // 0: accepted
};

class DoeRequestSize : public testing::TestWithParam<SizeCase> {};

TEST_P(DoeRequestSize, ValidatesSizeAndLengthField) {
  const auto& c = GetParam();
  auto bytes = object_bytes(c.bytes, c.dw1);
  auto r = parse_doe_request(bytes);
  if (c.err == 0) {
    ASSERT_TRUE(r.ok()) << r.error().name();
    EXPECT_EQ(r->dwords.size(), c.bytes / 4);
  } else {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), Errno(c.err)) << r.error().name();
  }
}

constexpr uint32_t kMax = kDoeMaxDwords;

INSTANTIATE_TEST_SUITE_P(
    Table, DoeRequestSize,
    testing::Values(SizeCase{"empty", 0, 0, EINVAL}, SizeCase{"one_byte", 1, 0, EINVAL},
                    SizeCase{"one_dword", 4, 1, EINVAL}, SizeCase{"seven_bytes", 7, 2, EINVAL},
                    SizeCase{"header_only", 8, 2, 0}, SizeCase{"nine_bytes", 9, 2, EINVAL},
                    SizeCase{"three_dwords", 12, 3, 0}, SizeCase{"length_says_more", 12, 4, EINVAL},
                    SizeCase{"length_says_less", 16, 3, EINVAL},
                    SizeCase{"length_one", 8, 1, EINVAL},
                    // 0 encodes 2^18: an 8-byte write claiming 2^18 dwords is malformed.
                    SizeCase{"length_zero_short", 8, 0, EINVAL},
                    // Bits above 17:0 are not part of the length.
                    SizeCase{"reserved_bits_ignored", 12, 0xfffc0003u, 0},
                    SizeCase{"max_minus_one", (kMax - 1) * 4, kMax - 1, 0},
                    SizeCase{"max_encoded_as_zero", kMax * 4, 0, 0},
                    SizeCase{"max_with_wrong_length", kMax * 4, 5, EINVAL},
                    SizeCase{"over_max", (kMax + 1) * 4, 1, E2BIG},
                    SizeCase{"over_max_unaligned", (kMax + 1) * 4 + 1, 1, EINVAL}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(DoeRequest, ReturnsDwordsLittleEndianAndProtocol) {
  std::vector<uint8_t> b = {0x36, 0x1b, 0x01, 0x00, 3, 0, 0, 0, 0x78, 0x56, 0x34, 0x12};
  auto r = parse_doe_request(b);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dwords, (std::vector<uint32_t>{0x00011b36, 3, 0x12345678}));
  EXPECT_EQ(r->protocol, (backend::DoeFeature{0x1b36, 0x01}));
}

TEST(DoeRequest, OverMaxIsRejectedBeforeTheLengthIsRead) {
  // A mailbox smaller than 2^18: E2BIG even though the length field agrees.
  auto bytes = object_bytes(16, 4);
  auto r = parse_doe_request(bytes, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(E2BIG));
  // A length-0 object is 2^18 dwords: over any smaller maximum.
  auto max = parse_doe_request(object_bytes(kMax * 4, 0), kMax - 1);
  ASSERT_FALSE(max.ok());
  EXPECT_EQ(max.error(), Errno(E2BIG));
}

TEST(DoeRequest, CheckDwordsAppliesTheSameRules) {
  std::vector<uint32_t> ok = {0x00000001, 3, 0};
  ASSERT_TRUE(check_doe_dwords(ok).ok());
  EXPECT_EQ(*check_doe_dwords(ok), (backend::DoeFeature{1, 0}));
  std::vector<uint32_t> short_obj = {1};
  EXPECT_EQ(check_doe_dwords(short_obj).error(), Errno(EINVAL));
  std::vector<uint32_t> liar = {1, 4, 0};
  EXPECT_EQ(check_doe_dwords(liar).error(), Errno(EINVAL));
  EXPECT_EQ(check_doe_dwords(ok, 2).error(), Errno(E2BIG));
}

TEST(DoeHeader, EncodesAndDecodesLength) {
  EXPECT_EQ(doe_object_length(0), kMax);
  EXPECT_EQ(doe_object_length(2), 2u);
  EXPECT_EQ(doe_encode_length(kMax), 0u);
  auto [dw0, dw1] = doe_header({0x1e98, 0x02}, 5);
  EXPECT_EQ(dw0, 0x00021e98u);
  EXPECT_EQ(dw1, 5u);
}

struct ProtoCase {
  const char* text;
  std::optional<backend::DoeFeature> want;
};

class DoeProtocolParse : public testing::TestWithParam<ProtoCase> {};

TEST_P(DoeProtocolParse, Parses) {
  EXPECT_EQ(parse_doe_protocol(GetParam().text), GetParam().want) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Table, DoeProtocolParse,
    testing::Values(ProtoCase{"0001:00", backend::DoeFeature{1, 0}},
                    ProtoCase{"1E98:02", backend::DoeFeature{0x1e98, 2}},
                    ProtoCase{"1b36:ff", backend::DoeFeature{0x1b36, 0xff}},
                    ProtoCase{"1:00", std::nullopt}, ProtoCase{"0001:0", std::nullopt},
                    ProtoCase{"0001-00", std::nullopt}, ProtoCase{"000g:00", std::nullopt},
                    ProtoCase{"+001:00", std::nullopt}, ProtoCase{"0001:00\n", std::nullopt},
                    ProtoCase{"", std::nullopt}));

TEST(DoeProtocol, FormatsLikeLinux) {
  EXPECT_EQ(format_doe_protocol({0x1E98, 0x02}), "1e98:02");
  EXPECT_EQ(format_doe_protocol({0x0001, 0x00}), "0001:00");
}

TEST(DoeProtocol, AllowListGivesEperm) {
  std::vector<std::string> allowed = {"0001:00", "1E98:02", "garbage"};
  EXPECT_TRUE(check_doe_protocol_allowed({0x0001, 0x00}, allowed).ok());
  EXPECT_TRUE(check_doe_protocol_allowed({0x1e98, 0x02}, allowed).ok());
  auto denied = check_doe_protocol_allowed({0x1b36, 0x01}, allowed);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error(), Errno(EPERM));
  EXPECT_EQ(check_doe_protocol_allowed({0x0001, 0x00}, {}).error(), Errno(EPERM));
}

}  // namespace
}  // namespace pcifs::core
