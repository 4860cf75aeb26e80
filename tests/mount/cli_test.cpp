// S2 through the real binary: --help and --version, command-line and JSON
// errors (exit 2, naming file, field and expectation, nothing mounted),
// SIGTERM/SIGINT and fusermount3 -u ending the daemon cleanly, and the
// background mode (no -f) returning once the mount works.
#include <dirent.h>
#include <sys/wait.h>

#include <fstream>

#include "fixtures/mount_util.hpp"

namespace pcifs::testing {
namespace {

// A temp directory to mount on; unmounted (if anything mounted) and removed.
class TempDir {
 public:
  TempDir() {
    char dir[] = "/tmp/pcifs-cli-XXXXXX";
    path_ = mkdtemp(dir) ? dir : "";
  }
  ~TempDir() {
    if (is_fuse_mount(path_)) {
      if (std::system(("fusermount3 -u '" + path_ + "' 2>/dev/null").c_str()) != 0) {
        (void)std::system(("fusermount3 -u -z '" + path_ + "'").c_str());
      }
    }
    rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access((build_dir() + "/pcifs").c_str(), X_OK) != 0) GTEST_SKIP() << "no pcifs binary";
  }
};

TEST_F(CliTest, HelpListsEveryOptionAndExitsZero) {
  CmdResult r = run_pcifs({"--help"});
  EXPECT_EQ(r.status, 0) << r.err;
  for (const char* opt :
       {"--backend", "--view", "-f", "-o", "--log-level", "--lock-dir", "--max-threads",
        "--doe-timeout", "--version", "--help", "MOUNTPOINT", "sim:FILE", "sysfs:DIR"}) {
    EXPECT_TRUE(contains(r.out, opt)) << "--help does not mention " << opt << ":\n" << r.out;
  }
  // Control: an option that does not exist is not in the text.
  EXPECT_FALSE(contains(r.out, "--no-such-option"));
}

TEST_F(CliTest, VersionPrintsTheVersion) {
  CmdResult r = run_pcifs({"--version"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.rfind("pcifs ", 0) == 0) << r.out;
  EXPECT_GT(r.out.size(), std::string("pcifs \n").size()) << r.out;
}

TEST_F(CliTest, BadOptionExitsTwoAndMountsNothing) {
  TempDir m;
  CmdResult r = run_pcifs({"-f", "--no-such-option", m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--no-such-option")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

TEST_F(CliTest, BadBackendExitsTwoAndMountsNothing) {
  TempDir m;
  CmdResult r = run_pcifs({"-f", "--backend=floppy", m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "floppy") || contains(r.err, "backend")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

TEST_F(CliTest, BadLogLevelExitsTwo) {
  TempDir m;
  CmdResult r = run_pcifs({"-f", "--log-level=loud", m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "loud") || contains(r.err, "log-level")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

TEST_F(CliTest, MaxThreadsOutOfRangeExitsTwo) {
  for (const char* bad : {"--max-threads=0", "--max-threads=1025", "--max-threads=many"}) {
    TempDir m;
    CmdResult r = run_pcifs({"-f", bad, m.path()}, {m.path()});
    EXPECT_EQ(r.status, 2) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--max-threads")) << r.err;
    EXPECT_FALSE(is_fuse_mount(m.path()));
  }
}

TEST_F(CliTest, RelativeLockDirExitsTwo) {
  TempDir m;
  CmdResult r = run_pcifs({"-f", "--lock-dir=relative/dir", m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--lock-dir")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

TEST_F(CliTest, MissingMountpointExitsTwo) {
  CmdResult r = run_pcifs({"-f"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "MOUNTPOINT")) << r.err;
}

TEST_F(CliTest, MountpointThatIsNotADirectoryExitsTwo) {
  TempFile f("x", ".txt");
  CmdResult r = run_pcifs({"-f", f.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, f.path())) << r.err;
}

struct BadJson {
  const char* what;
  const char* text;
  const char* field;
};

class CliBadViewTest : public CliTest, public ::testing::WithParamInterface<BadJson> {};

// A bad view file: exit 2, naming the file, the field and what was expected.
TEST_P(CliBadViewTest, NamesFileFieldAndExpectation) {
  TempDir m;
  TempFile view(GetParam().text);
  CmdResult r = run_pcifs({"-f", "--view=" + view.path(), m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, view.path())) << r.err;
  EXPECT_TRUE(contains(r.err, GetParam().field)) << r.err;
  EXPECT_TRUE(contains(r.err, "expected")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

INSTANTIATE_TEST_SUITE_P(
    Views, CliBadViewTest,
    ::testing::Values(BadJson{"config_read", R"({"config_read": "partial"})", "config_read"},
                      BadJson{"unknown", R"({"colour": "blue"})", "colour"},
                      BadJson{"uid", R"({"uid": "root"})", "uid"},
                      BadJson{"devices", R"({"devices": ["01:00"]})", "devices"},
                      BadJson{"hide", R"({"hide": ["everything"]})", "hide"},
                      BadJson{"syntax", R"({"config_write": tru)", ""}),
    [](const auto& tp) { return std::string(tp.param.what); });

// Control for the view cases: a good view file mounts (so exit 2 above was
// about the field, not about --view as such).
TEST_F(CliTest, GoodViewFileMounts) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  TempFile view(R"({"config_read": "header", "name": "c1"})");
  Daemon d({"--view=" + view.path()});
  ASSERT_TRUE(d.mounted()) << d.log();
  EXPECT_EQ(read_text(d.dev("0000:01:00.0") + "/vendor"), "0x1b36\n");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// -o before the mountpoint, as in `pcifs -o ro MNT`.
TEST_F(CliTest, MountOptionBeforeTheMountpoint) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Daemon d({"-o", "default_permissions"});
  ASSERT_TRUE(d.mounted()) << d.log();
  EXPECT_EQ(read_text(d.dev("0000:01:00.0") + "/vendor"), "0x1b36\n");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST_F(CliTest, BadDeviceSetFileExitsTwoNamingTheField) {
  TempDir m;
  TempFile set(
      R"({"devices": [{"bdf": "0000:01:00.0", "vendor": 1, "device": 2, "class": "0x050210",
                   "bars": [{"index": 0, "type": "mem32", "size": 100}]}]})");
  CmdResult r = run_pcifs({"-f", "--backend=sim:" + set.path(), m.path()}, {m.path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, set.path())) << r.err;
  EXPECT_TRUE(contains(r.err, "devices[0].bars[0].size")) << r.err;
  EXPECT_TRUE(contains(r.err, "expected")) << r.err;
  EXPECT_FALSE(is_fuse_mount(m.path()));
}

class CliSignalTest : public CliTest, public ::testing::WithParamInterface<int> {};

TEST_P(CliSignalTest, UnmountsCleanlyAndExitsZero) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Daemon d;
  ASSERT_TRUE(d.mounted()) << d.log();
  const std::string mnt = d.mnt();
  const int st = d.signal_and_wait(GetParam());
  EXPECT_TRUE(WIFEXITED(st)) << "status " << st << "\n" << d.log();
  EXPECT_EQ(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0) << d.log();
  EXPECT_FALSE(is_fuse_mount(mnt)) << "still mounted after the signal";
}

INSTANTIATE_TEST_SUITE_P(Signals, CliSignalTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& tp) { return tp.param == SIGTERM ? "TERM" : "INT"; });

// Handles the kernel never releases (still open when the daemon stops) must
// not leak: under ASan, LeakSanitizer turns a leak into a non-zero exit here.
TEST_F(CliTest, StopsCleanlyWithHandlesStillOpen) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Daemon d;
  ASSERT_TRUE(d.mounted()) << d.log();
  DIR* dir = opendir((d.mnt() + "/devices").c_str());
  ASSERT_NE(dir, nullptr);
  ASSERT_NE(readdir(dir), nullptr);
  const int status = open((d.mnt() + "/status").c_str(), O_RDONLY);
  const int config = open((d.dev("0000:01:00.0") + "/config").c_str(), O_RDONLY);
  ASSERT_GE(status, 0);
  ASSERT_GE(config, 0);
  const int st = d.signal_and_wait(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st << "\n" << d.log();
  closedir(dir);
  close(status);
  close(config);
}

TEST_F(CliTest, FusermountEndsTheDaemon) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Daemon d;
  ASSERT_TRUE(d.mounted()) << d.log();
  ASSERT_TRUE(d.alive());
  // Mounted is not yet started: the daemon checks that its mount answers
  // before it serves (and fails if it is gone by then).
  ASSERT_TRUE(d.wait_started()) << d.log();
  ASSERT_EQ(std::system(("fusermount3 -u '" + d.mnt() + "'").c_str()), 0);
  EXPECT_TRUE(eventually([&] { return !d.alive(); })) << "the daemon outlived its mount";
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// The pids whose command line is a pcifs running on mnt.
std::vector<pid_t> pcifs_pids_on(const std::string& mnt) {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (!proc) return out;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string cmd = slurp("/proc/" + std::string(e->d_name) + "/cmdline");
    std::vector<std::string> argv;
    for (size_t at = 0; at < cmd.size();) {
      const size_t end = cmd.find('\0', at);
      argv.push_back(cmd.substr(at, end - at));
      at = end == std::string::npos ? cmd.size() : end + 1;
    }
    if (argv.size() < 2 || argv[0].size() < 5 || argv[0].substr(argv[0].size() - 5) != "pcifs") {
      continue;
    }
    for (const auto& a : argv) {
      if (a == mnt) out.push_back(pid);
    }
  }
  closedir(proc);
  return out;
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  // A zombie waiting for its new parent has ended too.
  const std::string st = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close_paren = st.rfind(')');
  return close_paren != std::string::npos && st.size() > close_paren + 2 &&
         st[close_paren + 2] == 'Z';
}

TEST_F(CliTest, WithoutForegroundReturnsAfterMounting) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  TempDir m;
  CmdResult r = run_pcifs({m.path()}, {m.path()});
  std::vector<pid_t> pids = pcifs_pids_on(m.path());
  EXPECT_EQ(r.status, 0) << r.err;
  // Mounted by the time the command returned: no waiting here.
  EXPECT_TRUE(is_fuse_mount(m.path()));
  EXPECT_EQ(read_text(m.path() + "/devices/0000:01:00.0/vendor"), "0x1b36\n");
  ASSERT_EQ(pids.size(), 1u) << "expected one background daemon on " << m.path();
  ASSERT_EQ(std::system(("fusermount3 -u '" + m.path() + "'").c_str()), 0);
  const bool gone = eventually([&] { return process_gone(pids[0]); });
  EXPECT_TRUE(gone) << "the background daemon outlived its mount";
  if (!gone) ::kill(pids[0], SIGKILL);
}

}  // namespace
}  // namespace pcifs::testing
