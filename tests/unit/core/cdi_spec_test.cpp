// CDI specs for views (core/cdi_spec.hpp): the fields a CDI engine reads, the
// lowest version those fields need, device names sanitised to CDI's rule, the
// hook that makes a container fail closed, the errors that name the file and
// field, several views in one spec.
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
  // A mount's "type" needs CDI 0.4.0; nothing here needs more.
  EXPECT_EQ(s["cdiVersion"], "0.4.0");
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
  // No hook binary in the options: no hook.
  for (const auto& [k, v] : d["containerEdits"].items()) EXPECT_EQ(k, "mounts");
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

// --- The version: the lowest CDI version the spec's fields need.

json spec_with(const json& body) {
  json s = {{"cdiVersion", ""}, {"kind", "pcifs.io/view"}, {"devices", json::array()}};
  for (const auto& [k, v] : body.items()) s[k] = v;
  return s;
}

json device(const std::string& name, const json& edits = json::object()) {
  return {{"name", name}, {"containerEdits", edits}};
}

struct VersionCase {
  const char* what;
  json spec;
  const char* version;
};

class CdiVersionTest : public ::testing::TestWithParam<VersionCase> {};

TEST_P(CdiVersionTest, LowestVersionTheFieldsNeed) {
  EXPECT_EQ(cdi_min_version(GetParam().spec), GetParam().version) << GetParam().what;
}

const json kTypedMount = {{"hostPath", "/a"}, {"containerPath", "/b"}, {"type", "bind"}};
const json kPlainMount = {{"hostPath", "/a"}, {"containerPath", "/b"}, {"options", {"rbind"}}};
const json kHook = {{"hookName", "createRuntime"}, {"path", "/bin/true"}, {"timeout", 5}};

// The CDI specification's version table (SPEC.md, "Released versions"), one
// row per field that raises the floor, each with the field alone.
INSTANTIATE_TEST_SUITE_P(
    Table, CdiVersionTest,
    ::testing::Values(
        VersionCase{"nothing", spec_with({{"devices", {device("a")}}}), "0.3.0"},
        VersionCase{"mount without type",
                    spec_with({{"devices", {device("a", {{"mounts", {kPlainMount}}})}}}), "0.3.0"},
        VersionCase{"hooks are older than 0.3.0",
                    spec_with({{"devices", {device("a", {{"hooks", {kHook}}})}}}), "0.3.0"},
        VersionCase{"mount type (0.4.0)",
                    spec_with({{"devices", {device("a", {{"mounts", {kTypedMount}}})}}}), "0.4.0"},
        VersionCase{"mount type in the spec's own edits",
                    spec_with({{"devices", {device("a")}},
                               {"containerEdits", {{"mounts", {kTypedMount}}}}}),
                    "0.4.0"},
        VersionCase{"name starting with a digit (0.5.0)", spec_with({{"devices", {device("7a")}}}),
                    "0.5.0"},
        VersionCase{
            "device node hostPath (0.5.0)",
            spec_with({{"devices",
                        {device("a", {{"deviceNodes",
                                       {{{"path", "/dev/x"}, {"hostPath", "/dev/y"}}}}})}}}),
            "0.5.0"},
        VersionCase{"annotations (0.6.0)",
                    spec_with({{"devices", {device("a")}}, {"annotations", {{"k", "v"}}}}),
                    "0.6.0"},
        VersionCase{"device annotations (0.6.0)",
                    spec_with({{"devices", {{{"name", "a"}, {"annotations", {{"k", "v"}}}}}}}),
                    "0.6.0"},
        VersionCase{"dot in the kind's name (0.6.0)",
                    spec_with({{"kind", "pcifs.io/a.b"}, {"devices", {device("a")}}}), "0.6.0"},
        VersionCase{
            "the highest need wins",
            spec_with({{"devices", {device("a", {{"mounts", {kTypedMount}}}), device("9")}}}),
            "0.5.0"}));

// Any JSON at all: fields of the wrong shape need nothing, and never throw.
TEST(CdiSpecTest, VersionOfOddShapes) {
  for (const json& odd :
       {json("x"), json::array({1}), json{{"devices", "x"}},
        json{{"devices", {1, json::array()}}, {"kind", 7}},
        json{{"devices", {{{"name", 7}, {"containerEdits", {{"mounts", 3}}}}}}}}) {
    EXPECT_EQ(cdi_min_version(odd), "0.3.0") << odd.dump();
  }
}

// What pcifs emits: 0.4.0 for the typed bind mount, 0.5.0 once a view's name
// starts with a digit; never 0.6.0, which podman 4.3 (Debian 12) refuses.
TEST(CdiSpecTest, DeclaresTheLowestVersionItsFieldsNeed) {
  CdiOptions o;
  o.hook_binary = "/usr/bin/pcifs";
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1"})")}, o);
  EXPECT_EQ(s["cdiVersion"], "0.4.0");
  EXPECT_EQ(s["cdiVersion"], cdi_min_version(s));
  s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1", "name": "1st"})")}, o);
  EXPECT_EQ(s["cdiVersion"], "0.5.0");
  // The dot of "pcifs.io" is in the vendor part, where every version allows it.
  EXPECT_EQ(s["kind"], "pcifs.io/view");
}

// --- The hook: each device runs `pcifs cdi-hook` before its container starts.

TEST(CdiSpecTest, HookRunsTheBinaryWithTheViewAndContainerPath) {
  CdiOptions o;
  o.hook_binary = "/usr/local/bin/pcifs";
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/c1", "name": "web 1"})")}, o);
  const json& edits = s["devices"][0]["containerEdits"];
  ASSERT_EQ(edits["hooks"].size(), 1u);
  const json& h = edits["hooks"][0];
  EXPECT_EQ(h["hookName"], "createRuntime");
  EXPECT_EQ(h["path"], "/usr/local/bin/pcifs");
  EXPECT_EQ(h["args"], json::array({"pcifs", "cdi-hook", "--view", "web-1", "--container-path",
                                    "/sys/bus/pci"}));
  EXPECT_EQ(h["timeout"], kCdiHookTimeoutS);
  // Only the fields CDI defines for a hook.
  for (const auto& [k, v] : h.items()) {
    EXPECT_TRUE(k == "hookName" || k == "path" || k == "args" || k == "env" || k == "timeout") << k;
  }
  // The mount is still there, beside the hook.
  EXPECT_EQ(edits["mounts"].size(), 1u);
}

TEST(CdiSpecTest, HookFollowsTheContainerPathAndEachView) {
  CdiOptions o;
  o.hook_binary = "/usr/bin/pcifs";
  o.container_path = "/run/pci";
  auto s = spec_ok({view(R"({"mountpoint": "/run/pcifs/a", "name": "a"})", "/v/a.json"),
                    view(R"({"mountpoint": "/run/pcifs/b", "name": "b"})", "/v/b.json")},
                   o);
  for (size_t i = 0; i < 2; ++i) {
    const json& args = s["devices"][i]["containerEdits"]["hooks"][0]["args"];
    EXPECT_EQ(args[3], i == 0 ? "a" : "b");
    EXPECT_EQ(args[5], "/run/pci");
  }
}

TEST(CdiSpecTest, HookBinaryMustBeAbsolute) {
  CdiOptions o;
  o.hook_binary = "pcifs";
  auto err = spec_error({view(R"({"mountpoint": "/run/pcifs/c1"})")}, o);
  EXPECT_NE(err.find("hook: expected the absolute path"), std::string::npos) << err;
}

}  // namespace
}  // namespace pcifs::core
