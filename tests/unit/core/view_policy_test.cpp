#include "core/view_policy.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

namespace pcifs::core {
namespace {

ViewPolicy parse_ok(const std::string& text) {
  std::string err;
  auto v = parse_view(text, "v.json", &err);
  EXPECT_TRUE(v.ok()) << err;
  return v.ok() ? *v : ViewPolicy{};
}

TEST(ViewPolicyTest, FullExampleOfSpec) {
  auto v = parse_ok(R"({
    "mountpoint": "/run/pcifs/c1",
    "devices": ["0000:01:00.0", "8086:1572", "class:0108"],
    "uid": 100000, "gid": 100001,
    "config_read": "header", "config_write": false, "bar_access": false,
    "mask_addresses": true, "hide": ["dsn", "vpd"],
    "doe_protocols": ["0001:00", "0001:01", "1e98:02"],
    "low_power_access": "wake"})");
  EXPECT_EQ(v.name, "c1");
  EXPECT_EQ(v.mountpoint, "/run/pcifs/c1");
  ASSERT_TRUE(v.devices);
  EXPECT_EQ(v.devices->size(), 3u);
  EXPECT_EQ(v.uid, 100000u);
  EXPECT_EQ(v.gid, 100001u);
  EXPECT_TRUE(v.has_uid);
  EXPECT_EQ(v.config_read, ConfigRead::kHeader);
  EXPECT_FALSE(v.config_write);
  EXPECT_FALSE(v.bar_access);
  EXPECT_TRUE(v.mask_addresses);
  EXPECT_TRUE(v.hide_dsn);
  EXPECT_TRUE(v.hide_vpd);
  ASSERT_TRUE(v.doe_protocols);
  EXPECT_EQ(v.doe_protocols->size(), 3u);
  EXPECT_EQ(v.low_power_access, LowPowerAccess::kWake);
}

TEST(ViewPolicyTest, EveryFieldOptional) {
  auto v = parse_ok("{}");
  EXPECT_FALSE(v.devices);
  EXPECT_EQ(v.config_read, ConfigRead::kFull);
  EXPECT_FALSE(v.has_uid);
  EXPECT_EQ(v.low_power_access, LowPowerAccess::kDeny);
}

// Found by tests/fuzz/view_policy_fuzz.cpp: the error for a file that is not
// JSON echoes its first 40 bytes, and echoing invalid UTF-8 (or a character
// cut in two at byte 40) threw instead of failing with EINVAL.
TEST(ViewPolicyTest, NotJsonWithInvalidUtf8IsAnError) {
  for (const std::string& text : {std::string("\x31\x62\xf6\x36:10f0"),  // "1b?6:10f0"
                                  std::string(39, 'x') + "\xc3\xa9 not json"}) {
    std::string err;
    auto v = parse_view(text, "v.json", &err);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error(), Errno(EINVAL));
    EXPECT_NE(err.find("v.json: (document): expected valid JSON"), std::string::npos) << err;
  }
}

TEST(ViewPolicyTest, GidDefaultsToUid) { EXPECT_EQ(parse_ok(R"({"uid": 5})").gid, 5u); }

TEST(ViewPolicyTest, SelectorsMatch) {
  auto v = parse_ok(R"({"devices": ["0000:01:00.0", "8086:1572", "class:0108", "class:0c0330"]})");
  Bdf a = *Bdf::parse("0000:01:00.0"), b = *Bdf::parse("0000:02:00.0");
  EXPECT_TRUE(v.selects(a, 0x1b36, 0x1, 0x050210));      // by BDF
  EXPECT_TRUE(v.selects(b, 0x8086, 0x1572, 0x020000));   // by ids
  EXPECT_TRUE(v.selects(b, 0x144d, 0xa808, 0x010802));   // class base+sub
  EXPECT_TRUE(v.selects(b, 0x8086, 0x1, 0x0c0330));      // class with prog-if
  EXPECT_FALSE(v.selects(b, 0x8086, 0x1, 0x0c0320));     // prog-if differs
  EXPECT_FALSE(v.selects(b, 0x8086, 0x1573, 0x020000));  // nothing
}

TEST(ViewPolicyTest, EmptyDeviceListSelectsNothing) {
  auto v = parse_ok(R"({"devices": []})");
  EXPECT_FALSE(v.selects(*Bdf::parse("0000:00:00.0"), 1, 2, 3));
}

struct BadCase {
  const char* json;
  const char* message;
};
class ViewPolicyBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ViewPolicyBadTest, NamesFileFieldAndExpectation) {
  std::string err;
  auto v = parse_view(GetParam().json, "/etc/pcifs/c1.json", &err);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error(), Errno(EINVAL));
  EXPECT_EQ(err.rfind("/etc/pcifs/c1.json: ", 0), 0u) << err;
  EXPECT_NE(err.find(GetParam().message), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(
    All, ViewPolicyBadTest,
    ::testing::Values(
        BadCase{"{", "(document): expected valid JSON"},
        BadCase{"[]", "(document): expected a JSON object"},
        BadCase{R"({"devices": "0000:01:00.0"})", "devices: expected an array"},
        BadCase{R"({"devices": ["0000:01:00"]})", "devices[0]: expected \"DDDD:BB:DD.F\""},
        BadCase{R"({"devices": ["class:01"]})", "devices[0]: expected"},
        BadCase{R"({"uid": -1})", "uid: expected a numeric id"},
        BadCase{R"({"uid": "1000"})", "uid: expected a numeric id"},
        BadCase{R"({"config_read": "partial"})",
                "config_read: expected \"full\", \"header\" or \"none\""},
        BadCase{R"({"config_write": 1})", "config_write: expected true or false"},
        BadCase{R"({"hide": ["serial"]})", "hide[0]: expected \"dsn\" or \"vpd\""},
        BadCase{R"({"doe_protocols": ["1:0"]})", "doe_protocols[0]: expected \"VVVV:TT\""},
        BadCase{R"({"low_power_access": "sleep"})",
                "low_power_access: expected \"deny\" or \"wake\""},
        BadCase{R"({"mountpoint": "relative/path"})", "mountpoint: expected an absolute path"},
        BadCase{R"({"uid": 1, "config_reed": "full"})",
                "config_reed: expected one of the fields"}));

TEST(ViewPolicyTest, DefaultViewRules) {
  ViewPolicy v = default_view();
  Caller root{1, 0, 0}, user{2, 1000, 1000};
  EXPECT_TRUE(v.privileged(root));
  EXPECT_FALSE(v.privileged(user));
  EXPECT_TRUE(v.doe_allowed(user, {0x0001, 0x00}));   // discovery
  EXPECT_TRUE(v.doe_allowed(user, {0x1e98, 0x02}));   // CDAT
  EXPECT_FALSE(v.doe_allowed(user, {0x0001, 0x01}));  // SPDM: root only
  EXPECT_TRUE(v.doe_allowed(root, {0x0001, 0x01}));
}

TEST(ViewPolicyTest, ExplicitProtocolsApplyToEveryone) {
  auto v = parse_ok(R"({"uid": 1000, "doe_protocols": ["0001:00"]})");
  EXPECT_TRUE(v.privileged(Caller{1, 1000, 1000}));
  EXPECT_FALSE(v.doe_allowed(Caller{1, 0, 0}, {0x1e98, 0x02}));
  EXPECT_TRUE(v.doe_allowed(Caller{1, 1234, 0}, {0x0001, 0x00}));
}

TEST(ViewPolicyTest, LoadFileNamesViewAfterFileWithoutMountpoint) {
  char path[] = "/tmp/pcifs-view-XXXXXX.json";
  int fd = mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "{}", 2), 2);
  close(fd);
  std::string err;
  auto v = load_view_file(path, &err);
  unlink(path);
  ASSERT_TRUE(v.ok()) << err;
  EXPECT_EQ(v->name.rfind("pcifs-view-", 0), 0u);
  EXPECT_EQ(load_view_file("/nonexistent/v.json", &err).error(), Errno(ENOENT));
  EXPECT_EQ(err, "/nonexistent/v.json: cannot be read");
}

// A view named after a file whose name is not UTF-8 (Latin-1 "\xe9"): the
// name goes into status and control-socket JSON, where it threw at dump().
TEST(ViewPolicyTest, LoadFileNameNotUtf8) {
  char dir[] = "/tmp/pcifs-view-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/c\xe9.json";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "{}", 2), 2);
  close(fd);
  std::string err;
  auto v = load_view_file(path, &err);
  unlink(path.c_str());
  rmdir(dir);
  ASSERT_TRUE(v.ok()) << err;
  EXPECT_EQ(v->name, "c\xef\xbf\xbd");  // U+FFFD
  EXPECT_NO_THROW((void)nlohmann::json(v->name).dump());
}

}  // namespace
}  // namespace pcifs::core
