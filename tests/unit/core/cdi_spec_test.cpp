// CDI specs for views (core/cdi_spec.hpp): the fields a CDI 0.6.0 engine
// reads, device names sanitised to CDI's rule, the errors that name the file
// and field, several views in one spec.
#include "core/cdi_spec.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <string>

#include "core/view_policy.hpp"

namespace pcifs::core {
namespace {

using json = nlohmann::ordered_json;

ViewPolicy view(const std::string& text, const std::string& file = "/etc/pcifs/c1.json") {
  std::string err;
  auto v = parse_view(text, file, &err);
  EXPECT_TRUE(v.ok()) << err;
  return v.ok() ? *v : ViewPolicy{};
}

json spec_ok(const std::vector<ViewPolicy>& views, const CdiOptions& o = {}) {
  std::string err;
  auto s = cdi_spec(views, o, &err);
  EXPECT_TRUE(s.ok()) << err;
  return s.ok() ? *s : json{};
}

std::string spec_error(const std::vector<ViewPolicy>& views, const CdiOptions& o = {}) {
  std::string err;
  auto s = cdi_spec(views, o, &err);
  EXPECT_FALSE(s.ok()) << s->dump();
  return err;
}

// The name rule of the CDI reference parser (ValidateDeviceName), written out
// independently so the sanitiser is checked against the rule, not itself.
bool valid_cdi_name(const std::string& n) {
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (n.empty() || !alnum(n.front()) || !alnum(n.back())) return false;
  for (char c : n) {
    if (!alnum(c) && c != '_' && c != '-' && c != '.' && c != ':') return false;
  }
  return true;
}

TEST(CdiSpecTest, OneViewHasEveryFieldAnEngineReads) {
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1", "uid": 100000})")});
  EXPECT_EQ(s["cdiVersion"], "0.6.0");
  EXPECT_EQ(s["kind"], "pcifs.io/view");
  ASSERT_EQ(s["devices"].size(), 1u);
  const json& d = s["devices"][0];
  EXPECT_EQ(d["name"], "c1");
  ASSERT_EQ(d["containerEdits"]["mounts"].size(), 1u);
  const json& m = d["containerEdits"]["mounts"][0];
  EXPECT_EQ(m["hostPath"], "/run/pcifs/c1");
  EXPECT_EQ(m["containerPath"], "/sys/bus/pci");
  EXPECT_EQ(m["type"], "bind");
  EXPECT_EQ(m["options"], json::array({"rbind", "nosuid", "nodev", "noexec"}));
  // Printed in the order CDI lists the fields, for the person reading it.
  EXPECT_EQ(s.begin().key(), "cdiVersion");
  EXPECT_EQ(m.begin().key(), "hostPath");
  // Only what CDI defines: an engine rejects a spec with unknown fields.
  for (const auto& [k, v] : s.items()) {
    EXPECT_TRUE(k == "cdiVersion" || k == "kind" || k == "devices") << k;
  }
  for (const auto& [k, v] : d.items()) EXPECT_TRUE(k == "name" || k == "containerEdits") << k;
  for (const auto& [k, v] : m.items()) {
    EXPECT_TRUE(k == "hostPath" || k == "containerPath" || k == "type" || k == "options") << k;
  }
}

// A view that allows no config writes and no BARs still has power_state,
// reset and doe: the mount stays writable and the daemon decides per caller.
TEST(CdiSpecTest, NeverReadOnlyEvenForAViewWithoutWrites) {
  auto s = spec_ok({view(
      R"({"mountpoint": "/run/pcifs/c1", "config_write": false, "bar_access": false,
          "config_read": "header"})")});
  const json& opts = s["devices"][0]["containerEdits"]["mounts"][0]["options"];
  for (const auto& o : opts) EXPECT_NE(o, "ro");
  // Control: the options are there to look at.
  EXPECT_EQ(opts.size(), 4u);
}

TEST(CdiSpecTest, ContainerPathOption) {
  CdiOptions o;
  o.container_path = "/run/pcifs";
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1"})")}, o);
  EXPECT_EQ(s["devices"][0]["containerEdits"]["mounts"][0]["containerPath"], "/run/pcifs");
  o.container_path = "sys/bus/pci";
  auto err = spec_error({view(R"({"mountpoint": "/run/pcifs/c1"})")}, o);
  EXPECT_NE(err.find("--container-path: expected an absolute path"), std::string::npos) << err;
}

TEST(CdiSpecTest, NameComesFromTheNameFieldElseTheMountpoint) {
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1", "name": "web-1"})")});
  EXPECT_EQ(s["devices"][0]["name"], "web-1");
  // load_view_file names a view without mountpoint or name after its file;
  // parse_view alone leaves the source there, which sanitises like any name.
  EXPECT_EQ(cdi_device_name("/etc/pcifs/c1.json"), "etc-pcifs-c1.json");
}

struct NameCase {
  const char* in;
  const char* out;
};

class CdiNameTest : public ::testing::TestWithParam<NameCase> {};

TEST_P(CdiNameTest, SanitisesToCdiRule) {
  const std::string out = cdi_device_name(GetParam().in);
  EXPECT_EQ(out, GetParam().out) << "from \"" << GetParam().in << "\"";
  EXPECT_EQ(valid_cdi_name(out), !out.empty()) << out;
}

INSTANTIATE_TEST_SUITE_P(
    Names, CdiNameTest,
    ::testing::Values(NameCase{"c1", "c1"}, NameCase{"A.b_c:d-9", "A.b_c:d-9"},
                      NameCase{"my view", "my-view"}, NameCase{"a  /  b", "a-b"},
                      NameCase{"-_.lead", "lead"}, NameCase{"trail.-_:", "trail"},
                      NameCase{"0000:01:00.0", "0000:01:00.0"}, NameCase{"caf\xc3\xa9", "caf"},
                      NameCase{"x\xc3\xa9y", "x-y"}, NameCase{"7", "7"}, NameCase{"---", ""},
                      NameCase{"", ""}, NameCase{"\xc3\xa9", ""}));

// The checker above is a real check: it rejects what CDI rejects.
TEST(CdiSpecTest, NameRuleCheckerRejectsBadNames) {
  for (const char* bad : {"", "-a", "a-", "a b", "a/b", "_", "a:"}) {
    EXPECT_FALSE(valid_cdi_name(bad)) << bad;
  }
}

TEST(CdiSpecTest, NameWithoutLetterOrDigitIsAnError) {
  auto err = spec_error({view(R"({"mountpoint": "/run/pcifs/c1", "name": "--"})", "/v/x.json")});
  EXPECT_NE(err.find("/v/x.json: name: expected"), std::string::npos) << err;
  EXPECT_NE(err.find("\"--\""), std::string::npos) << err;
}

TEST(CdiSpecTest, DuplicateNamesAreAnError) {
  auto a = view(R"({"mountpoint": "/run/pcifs/a", "name": "web 1"})", "/v/a.json");
  auto b = view(R"({"mountpoint": "/run/pcifs/b", "name": "web/1"})", "/v/b.json");
  auto err = spec_error({a, b});
  EXPECT_NE(err.find("/v/b.json: name: expected a CDI device name no other view uses"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("/v/a.json"), std::string::npos) << err;
  // Control: distinct names pass.
  b.name = "web 2";
  EXPECT_EQ(spec_ok({a, b})["devices"].size(), 2u);
}

TEST(CdiSpecTest, DuplicateMountpointsAreAnError) {
  auto a = view(R"({"mountpoint": "/run/pcifs/c", "name": "a"})", "/v/a.json");
  auto b = view(R"({"mountpoint": "/run/pcifs/c", "name": "b"})", "/v/b.json");
  auto err = spec_error({a, b});
  EXPECT_NE(err.find("/v/b.json: mountpoint: expected"), std::string::npos) << err;
}

TEST(CdiSpecTest, ViewWithoutMountpointIsAnError) {
  auto err = spec_error({view(R"({"name": "c1"})", "/v/c1.json")});
  EXPECT_NE(err.find("/v/c1.json: mountpoint: expected an absolute path"), std::string::npos)
      << err;
}

TEST(CdiSpecTest, NoViewsIsAnError) {
  auto err = spec_error({});
  EXPECT_NE(err.find("--view: expected"), std::string::npos) << err;
}

TEST(CdiSpecTest, SeveralViewsInOrderEachWithItsMount) {
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1"})", "/v/1.json"),
                    view(R"({"mountpoint": "/run/pcifs/c2", "name": "db"})", "/v/2.json"),
                    view(R"({"mountpoint": "/srv/x y"})", "/v/3.json")});
  ASSERT_EQ(s["devices"].size(), 3u);
  const char* names[] = {"c1", "db", "x-y"};
  const char* hosts[] = {"/run/pcifs/c1", "/run/pcifs/c2", "/srv/x y"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(s["devices"][i]["name"], names[i]);
    EXPECT_EQ(s["devices"][i]["containerEdits"]["mounts"][0]["hostPath"], hosts[i]);
    EXPECT_EQ(s["devices"][i]["containerEdits"]["mounts"][0]["containerPath"], "/sys/bus/pci");
  }
  // One kind for all: `--device pcifs.io/view=db` picks the second.
  EXPECT_EQ(s["kind"], "pcifs.io/view");
  // The spec round-trips through JSON text, as it does through /etc/cdi.
  EXPECT_EQ(json::parse(s.dump(2)), s);
}

}  // namespace
}  // namespace pcifs::core
