// The CDI hook (control/cdi_hook.hpp): from the OCI state and the container's
// config.json it refuses two views at one path and a view that is not served,
// lets one live view through, and never hangs on a mount that does not answer.
#include "control/cdi_hook.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pcifs::control {
namespace {

using json = nlohmann::json;

// A config.json as podman 4.3 + runc write it, reduced to what matters: the
// container's mounts and the hooks the CDI devices added.
json config(const std::vector<std::pair<std::string, std::string>>& mounts,
            const std::vector<std::string>& hooked_views,
            const std::string& path = "/sys/bus/pci") {
  json c = {{"ociVersion", "1.0.2-dev"}, {"mounts", json::array()}};
  c["mounts"].push_back({{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}});
  for (const auto& [src, dst] : mounts) {
    c["mounts"].push_back({{"destination", dst},
                           {"type", "bind"},
                           {"source", src},
                           {"options", {"rbind", "nosuid", "nodev", "noexec"}}});
  }
  for (const auto& v : hooked_views) {
    c["hooks"]["createRuntime"].push_back(
        {{"path", "/usr/bin/pcifs"},
         {"args", {"pcifs", "cdi-hook", "--view", v, "--container-path", path}},
         {"timeout", 10}});
  }
  return c;
}

// A checker that records what it was asked and answers `why`.
struct FakeCheck {
  std::string why;
  std::vector<std::string> asked;
  MountCheck fn() {
    return [this](const std::string& s) {
      asked.push_back(s);
      return why;
    };
  }
};

CdiHookArgs args(const std::string& view, const std::string& path = "/sys/bus/pci") {
  return CdiHookArgs{view, path};
}

TEST(CdiHookTest, NormalisesPaths) {
  EXPECT_EQ(normalise_path("/sys/bus/pci/"), "/sys/bus/pci");
  EXPECT_EQ(normalise_path("/sys//bus///pci//"), "/sys/bus/pci");
  EXPECT_EQ(normalise_path("/"), "/");
  EXPECT_EQ(normalise_path("//"), "/");
  EXPECT_EQ(normalise_path("/sys/bus/pci"), "/sys/bus/pci");
}

TEST(CdiHookTest, StateBundle) {
  // The state runc 1.1 writes to a createRuntime hook.
  const std::string state =
      R"({"ociVersion":"1.0.2-dev","id":"11dd","status":"creating","pid":7649,)"
      R"("bundle":"/var/lib/containers/storage/overlay-containers/11dd/userdata",)"
      R"("annotations":{"io.container.manager":"libpod"}})";
  std::string err;
  auto b = oci_state_bundle(state, &err);
  ASSERT_TRUE(b.ok()) << err;
  EXPECT_EQ(*b, "/var/lib/containers/storage/overlay-containers/11dd/userdata");
  EXPECT_FALSE(oci_state_bundle("not json", &err).ok());
  EXPECT_NE(err.find("not a JSON object"), std::string::npos) << err;
  EXPECT_FALSE(oci_state_bundle(R"({"id":"x","pid":1})", &err).ok());
  EXPECT_NE(err.find("no \"bundle\""), std::string::npos) << err;
  EXPECT_FALSE(oci_state_bundle(R"({"bundle":""})", &err).ok());
  EXPECT_FALSE(oci_state_bundle("[]", &err).ok());
}

TEST(CdiHookTest, OneLiveViewStarts) {
  FakeCheck live;
  const auto c = config({{"/run/pcifs/c1", "/sys/bus/pci"}}, {"c1"});
  EXPECT_EQ(check_container(args("c1"), c.dump(), live.fn()), "");
  // The checker was asked about the mount's source, once.
  EXPECT_EQ(live.asked, std::vector<std::string>{"/run/pcifs/c1"});
}

TEST(CdiHookTest, ViewNotServedIsRefused) {
  FakeCheck dead{"/run/pcifs/c1: Transport endpoint is not connected", {}};
  const auto c = config({{"/run/pcifs/c1", "/sys/bus/pci"}}, {"c1"});
  EXPECT_EQ(check_container(args("c1"), c.dump(), dead.fn()),
            "view c1 is not served (/run/pcifs/c1: Transport endpoint is not connected): start "
            "its daemon before the container");
}

// What podman 4.3 really hands runc for `--device pcifs.io/view=a --device
// pcifs.io/view=b`: CDI replaced a's mount with b's, so one mount is left,
// and both hooks.
TEST(CdiHookTest, TwoViewsAtOnePathAreRefusedByName) {
  FakeCheck live;
  const auto c = config({{"/run/pcifs/b", "/sys/bus/pci"}}, {"a", "b"});
  const std::string msg = check_container(args("a"), c.dump(), live.fn());
  EXPECT_EQ(msg,
            "container has 2 pcifs views at /sys/bus/pci (a, b), and only the last would be "
            "mounted: one view per container; make a view with all their devices instead");
  // Refused before any mount is looked at: b's mount is live, and beside the point.
  EXPECT_TRUE(live.asked.empty());
  // Each view's hook says the same: whichever runs first refuses.
  EXPECT_EQ(check_container(args("b"), c.dump(), live.fn()), msg);
  // An engine that kept both mounts is refused the same way. Trailing and
  // doubled slashes name the same directory.
  const auto both =
      config({{"/run/pcifs/a", "/sys/bus/pci"}, {"/run/pcifs/b", "/sys//bus/pci/"}}, {"a", "b"});
  EXPECT_EQ(check_container(args("a"), both.dump(), live.fn()), msg);
  auto slashes = config({{"/run/pcifs/b", "/sys/bus/pci"}}, {"a"}, "/sys/bus/pci/");
  slashes["hooks"]["createRuntime"].push_back(
      config({}, {"b"}, "//sys/bus//pci")["hooks"]["createRuntime"][0]);
  EXPECT_EQ(check_container(args("a"), slashes.dump(), live.fn()), msg);
  EXPECT_TRUE(live.asked.empty());
}

// Control: one view named twice (the same --device twice) is one view.
TEST(CdiHookTest, OneViewNamedTwiceIsOneView) {
  FakeCheck live;
  const auto c = config({{"/run/pcifs/a", "/sys/bus/pci"}}, {"a", "a"});
  EXPECT_EQ(check_container(args("a"), c.dump(), live.fn()), "");
}

TEST(CdiHookTest, AViewAndAnotherMountAtThePathAreRefusedBySource) {
  FakeCheck live;
  const auto c = config({{"/run/pcifs/a", "/sys/bus/pci"}, {"/srv/fake", "/sys/bus/pci"}}, {"a"});
  EXPECT_EQ(check_container(args("a"), c.dump(), live.fn()),
            "container mounts 2 file systems at /sys/bus/pci (/run/pcifs/a, /srv/fake), view a "
            "among them: a view must be the only mount there");
}

// Control: views at different paths, and mounts below or beside the path,
// are no conflict.
TEST(CdiHookTest, OtherPathsAreNoConflict) {
  FakeCheck live;
  const auto c = config({{"/run/pcifs/a", "/sys/bus/pci"},
                         {"/run/pcifs/b", "/run/pci-b"},
                         {"/srv/x", "/sys/bus/pci/devices"},
                         {"/srv/y", "/sys/bus/pcie"}},
                        {"a"});
  EXPECT_EQ(check_container(args("a"), c.dump(), live.fn()), "");
  EXPECT_EQ(live.asked, std::vector<std::string>{"/run/pcifs/a"});
  live.asked.clear();
  EXPECT_EQ(check_container(args("b", "/run/pci-b/"), c.dump(), live.fn()), "");
  EXPECT_EQ(live.asked, std::vector<std::string>{"/run/pcifs/b"});
}

TEST(CdiHookTest, HooksOfOtherPathsDoNotCountAsViewsHere) {
  FakeCheck live;
  auto c = config({{"/run/pcifs/a", "/sys/bus/pci"}, {"/srv/fake", "/sys/bus/pci"}}, {"a"});
  // A pcifs hook for another container path names a view that is not here.
  c["hooks"]["createRuntime"].push_back(
      {{"path", "/usr/bin/pcifs"},
       {"args", {"pcifs", "cdi-hook", "--view", "z", "--container-path", "/elsewhere"}}});
  // A hook of some other program is not a view at all.
  c["hooks"]["prestart"].push_back({{"path", "/bin/true"}, {"args", {"true", "--view", "q"}}});
  const std::string msg = check_container(args("a"), c.dump(), live.fn());
  EXPECT_NE(msg.find("2 file systems"), std::string::npos) << msg;
}

TEST(CdiHookTest, NoMountAtThePathIsRefused) {
  FakeCheck live;
  const auto c = config({}, {"c1"});
  EXPECT_EQ(check_container(args("c1"), c.dump(), live.fn()),
            "view c1 has no mount at /sys/bus/pci in the container's config.json");
  EXPECT_TRUE(live.asked.empty());
}

TEST(CdiHookTest, UnreadableConfigIsRefused) {
  FakeCheck live;
  for (const char* bad : {"", "{", "[1]", "null"}) {
    EXPECT_NE(check_container(args("c1"), bad, live.fn()).find("config.json is not a JSON object"),
              std::string::npos)
        << bad;
  }
  // Odd shapes inside a valid object are not found mounts, never a crash.
  EXPECT_NE(check_container(args("c1"), R"({"mounts": 7, "hooks": []})", live.fn()), "");
  EXPECT_NE(check_container(args("c1"), R"({"mounts": [1, {"destination": 2}]})", live.fn()), "");
  EXPECT_TRUE(live.asked.empty());
}

// --- The real checker and its bound.

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pcifs-cdi-hook-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

using CdiHookMountTest = TempDir;

// A cleanly stopped daemon leaves its mountpoint: an empty directory.
TEST_F(CdiHookMountTest, PlainDirectoryIsNotServed) {
  const std::string why = check_pcifs_mount(dir_);
  EXPECT_EQ(why, dir_ + " is not a FUSE mount (no daemon serves it)");
}

TEST_F(CdiHookMountTest, MissingDirectoryIsNotServed) {
  EXPECT_EQ(check_pcifs_mount(dir_ + "/gone"), dir_ + "/gone: No such file or directory");
}

TEST(CdiHookBoundTest, ReturnsTheChildsAnswer) {
  auto r = run_bounded([] { return std::string("answer"); }, std::chrono::seconds(5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "answer");
  r = run_bounded([] { return std::string(); }, std::chrono::seconds(5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "");
}

// A check that never answers (a wedged FUSE daemon) is abandoned at its
// bound: the hook never hangs.
TEST(CdiHookBoundTest, ChildThatNeverAnswersTimesOut) {
  const auto start = std::chrono::steady_clock::now();
  auto r = run_bounded(
      [] {
        for (;;) ::pause();
        return std::string();
      },
      std::chrono::milliseconds(200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(ETIMEDOUT));
  // Generous: it returned, long before anything would call it a hang.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// A check that dies without answering is not taken for "live".
TEST(CdiHookBoundTest, ChildThatDiesIsAnError) {
  auto r = run_bounded([]() -> std::string { ::_exit(3); }, std::chrono::seconds(5));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
}

// --- The whole hook: state on a pipe, config.json in a bundle.

class CdiHookRunTest : public TempDir {
 protected:
  int run(const std::string& state, std::string* err) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    EXPECT_EQ(::write(fds[1], state.data(), state.size()), static_cast<ssize_t>(state.size()));
    ::close(fds[1]);
    ::testing::internal::CaptureStderr();
    const int rc = run_cdi_hook(args("c1"), fds[0]);
    *err = ::testing::internal::GetCapturedStderr();
    ::close(fds[0]);
    return rc;
  }
};

TEST_F(CdiHookRunTest, RefusesAViewThatIsNotServedWithOneLine) {
  std::ofstream(dir_ + "/config.json") << config({{dir_, "/sys/bus/pci"}}, {"c1"}).dump();
  std::string err;
  EXPECT_EQ(run(json{{"bundle", dir_}, {"pid", 1}}.dump(), &err), 1);
  EXPECT_EQ(err, "pcifs: view c1 is not served (" + dir_ +
                     " is not a FUSE mount (no daemon serves it)): start its daemon before the "
                     "container\n");
}

TEST_F(CdiHookRunTest, RefusesTwoViewsWithoutLookingFurther) {
  std::ofstream(dir_ + "/config.json") << config({{"/b", "/sys/bus/pci"}}, {"a", "b"}).dump();
  std::string err;
  EXPECT_EQ(run(json{{"bundle", dir_}}.dump(), &err), 1);
  EXPECT_EQ(err.rfind("pcifs: container has 2 pcifs views at /sys/bus/pci (a, b)", 0), 0u) << err;
}

TEST_F(CdiHookRunTest, FailsClosedOnABadStateOrBundle) {
  std::string err;
  EXPECT_EQ(run("", &err), 1);
  EXPECT_NE(err.find("pcifs: view c1: the OCI state on stdin is not a JSON object"),
            std::string::npos)
      << err;
  EXPECT_EQ(run(json{{"bundle", dir_ + "/none"}}.dump(), &err), 1);
  EXPECT_NE(err.find("cannot read " + dir_ + "/none/config.json"), std::string::npos) << err;
}

TEST(CdiHookTest, SelfExecutableIsAbsolute) {
  const std::string self = self_executable();
  ASSERT_FALSE(self.empty());
  EXPECT_EQ(self[0], '/');
  EXPECT_NE(self.find("control_cdi_hook_test"), std::string::npos) << self;
}

}  // namespace
}  // namespace pcifs::control
