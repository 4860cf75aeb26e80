// The daemon's CDI directory (control/cdi_dir.hpp): one spec per view, the
// same spec `pcifs cdi` prints for that view alone, written atomically with
// mode 0644 into a directory it creates; rewritten and removed by name; no
// temp file ever left where an engine would read it.
#include "control/cdi_dir.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/view_policy.hpp"

namespace pcifs::control {
namespace {

using json = nlohmann::ordered_json;

// mkdir's mode goes through the umask (the test binary is single-threaded).
mode_t current_umask() {
  const mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

class CdiDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pcifs-cdi-dir-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/run/cdi";  // not there yet: write_view_spec makes it
    options_.hook_binary = "/usr/bin/pcifs";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  static ViewPolicy view(const std::string& text) {
    std::string err;
    auto v = core::parse_view(text, "/etc/pcifs/v.json", &err);
    EXPECT_TRUE(v.ok()) << err;
    return v.ok() ? *v : ViewPolicy{};
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir_.c_str());
    if (!d) return out;
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
  }
  void write_ok(const ViewPolicy& v) {
    std::string err;
    EXPECT_TRUE(write_view_spec(dir_, v, options_, &err).ok()) << err;
  }

  std::string root_, dir_;
  core::CdiOptions options_;
};

TEST_F(CdiDirTest, PathIsKindAndDeviceName) {
  EXPECT_EQ(view_spec_path("/var/run/cdi", "c1"), "/var/run/cdi/pcifs.io-view_c1.json");
  // The device name, not the raw view name: the file names the CDI device.
  EXPECT_EQ(view_spec_path("/d", "my view"), "/d/pcifs.io-view_my-view.json");
}

TEST_F(CdiDirTest, WritesTheSpecOfTheOneViewAndCreatesTheDir) {
  const auto v = view(R"({"name": "c1", "mountpoint": "/run/pcifs/c1", "uid": 1000})");
  write_ok(v);
  const std::string path = view_spec_path(dir_, "c1");
  std::string err;
  auto want = core::cdi_spec({v}, options_, &err);
  ASSERT_TRUE(want.ok()) << err;
  const json got = json::parse(read(path));
  EXPECT_EQ(got, *want);
  EXPECT_EQ(got["devices"].size(), 1u);
  EXPECT_EQ(got["devices"][0]["name"], "c1");
  EXPECT_EQ(got["kind"], "pcifs.io/view");
  // The hook rides along when the options name the binary.
  EXPECT_EQ(got["devices"][0]["containerEdits"]["hooks"][0]["path"], "/usr/bin/pcifs");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u & ~static_cast<unsigned>(current_umask()));
  EXPECT_EQ(entries(), std::vector<std::string>{"pcifs.io-view_c1.json"});
}

TEST_F(CdiDirTest, RewriteReplacesAndLeavesNoTempFile) {
  write_ok(view(R"({"name": "c1", "mountpoint": "/run/pcifs/c1"})"));
  write_ok(view(R"({"name": "c1", "mountpoint": "/run/pcifs/other"})"));
  const json got = json::parse(read(view_spec_path(dir_, "c1")));
  EXPECT_EQ(got["devices"][0]["containerEdits"]["mounts"][0]["hostPath"], "/run/pcifs/other");
  EXPECT_EQ(entries(), std::vector<std::string>{"pcifs.io-view_c1.json"});
}

TEST_F(CdiDirTest, OneFilePerViewAndRemoveTakesOnlyItsOwn) {
  write_ok(view(R"({"name": "a", "mountpoint": "/run/pcifs/a"})"));
  write_ok(view(R"({"name": "b", "mountpoint": "/run/pcifs/b"})"));
  EXPECT_EQ(entries(), (std::vector<std::string>{"pcifs.io-view_a.json", "pcifs.io-view_b.json"}));
  remove_view_spec(dir_, "a");
  EXPECT_EQ(entries(), std::vector<std::string>{"pcifs.io-view_b.json"});
  remove_view_spec(dir_, "a");  // absent is fine
  remove_view_spec(root_ + "/nowhere", "b");
  EXPECT_EQ(entries(), std::vector<std::string>{"pcifs.io-view_b.json"});
}

// A view the builder refuses writes nothing, and says why.
TEST_F(CdiDirTest, BadViewWritesNothing) {
  std::string err;
  auto v = view(R"({"name": "--", "mountpoint": "/run/pcifs/c1"})");
  EXPECT_FALSE(write_view_spec(dir_, v, options_, &err).ok());
  EXPECT_NE(err.find("name: expected"), std::string::npos) << err;
  EXPECT_TRUE(entries().empty());
}

// A directory that cannot be made is an error naming it; nothing is left.
TEST_F(CdiDirTest, UnwritableDirIsAnError) {
  const std::string file = root_ + "/file";
  std::ofstream(file) << "x";
  std::string err;
  auto r =
      write_view_spec(file + "/cdi", view(R"({"name": "c1", "mountpoint": "/m"})"), options_, &err);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(err.find(file), std::string::npos) << err;
}

// Control for the "no temp file" checks: entries() does see a stray file.
TEST_F(CdiDirTest, EntriesSeesEveryFile) {
  write_ok(view(R"({"name": "c1", "mountpoint": "/run/pcifs/c1"})"));
  std::ofstream(dir_ + "/pcifs.io-view_c1.json.tmp.1") << "{";
  EXPECT_EQ(entries().size(), 2u);
}

}  // namespace
}  // namespace pcifs::control
