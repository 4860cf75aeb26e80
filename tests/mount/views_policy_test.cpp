// S6 policy fields through the real mount, one daemon serving a view per
// policy (the unrestricted view "full" of the same daemon is every negative
// control): uid/gid (ownership, and the view's uid is privileged), config_read
// full|header|none, config_write, bar_access, mask_addresses, hide dsn|vpd,
// doe_protocols. Callers are root, the view's uid (kViewUid), another user
// (kOtherUid) and nobody, each in a forked child that setresuid()s.
#include <sys/stat.h>

#include "fixtures/mount_views.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

using Names = std::set<std::string>;
constexpr const char* kEp = "0000:01:00.0";  // CXL endpoint: 3 BARs, ROM, DSN, DOE
constexpr off_t kCacheLine = PCI_CACHE_LINE_SIZE;
constexpr uint32_t kRegId = 0x40, kIdValue = 0x50434946;  // README: every memory BAR

ViewDaemon::Views policy_views() {
  return {
      {"full", ""},
      {"owned", R"("uid": 100000, "gid": 100001, "config_read": "header")"},
      {"none", R"("uid": 100000, "config_read": "none")"},
      {"ro", R"("uid": 100000, "config_write": false, "bar_access": false)"},
      {"mask", R"("mask_addresses": true, "hide": ["dsn"])"},
      {"doe1", R"("doe_protocols": ["0001:00"])"},
      {"doe2", R"("doe_protocols": ["0001:00", "1b36:01"])"},
      {"grp", R"("gid": 100002)"},
  };
}

class ViewPolicyTest : public SharedViewsTest<policy_views> {
 protected:
  static std::string dev(const std::string& view, const std::string& bdf = kEp) {
    return daemon_->dev(view, bdf);
  }

 public:
  static std::string dev_of(const std::string& view, const std::string& bdf) {
    return dev(view, bdf);
  }
};

// Runs fn as `uid` (root when nullopt) in a child; its result. Whatever the
// child claimed is released before this returns, so the next caller does not
// meet a leftover claim (EBUSY).
int as(std::optional<uid_t> uid, const std::function<int()>& fn) {
  const int rc = in_child(fn, uid);
  for (const char* b : {"0000:01:00.0", "0000:02:00.0"}) {
    EXPECT_TRUE(wait_unclaimed(ViewPolicyTest::dev_of("full", b))) << b << " still claimed";
  }
  return rc;
}

// --- uid / gid

TEST_F(ViewPolicyTest, FilesAreOwnedByTheViewsUidAndGid) {
  for (const char* rel : {"", "/devices", "/status", "/devices/0000:01:00.0",
                          "/devices/0000:01:00.0/config", "/devices/0000:01:00.0/resource0",
                          "/devices/0000:01:00.0/power_state", "/devices/0000:01:00.0/doe"}) {
    struct stat st {};
    ASSERT_EQ(stat((daemon_->mnt("owned") + rel).c_str(), &st), 0) << rel;
    EXPECT_EQ(st.st_uid, kViewUid) << rel;
    EXPECT_EQ(st.st_gid, 100001u) << rel;
    // Control: the view without uid is root's.
    ASSERT_EQ(stat((daemon_->mnt("full") + rel).c_str(), &st), 0) << rel;
    EXPECT_EQ(st.st_uid, 0u) << rel;
    EXPECT_EQ(st.st_gid, 0u) << rel;
  }
}

// SPEC S6: every field is optional, so "gid" alone still names the group of
// the view's files (uid stays root's). Fails today: fs/fuse/tree.cpp takes
// the gid only when the view also names a uid (reported to the lead).
TEST_F(ViewPolicyTest, GidAloneSetsTheGroup) {
  struct stat st {};
  ASSERT_EQ(stat((dev("grp") + "/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 100002u) << "SPEC S6: the view's gid is ignored without a uid";
}

// Each privileged operation of a view, as `uid`: 0 when all succeed, else the
// first errno (a claim is this child's and ends with it).
int privileged_ops(const std::string& d) {
  Fd bar(d + "/resource0", O_RDWR);
  if (!bar.ok()) return bar.err();
  uint32_t id = 0;
  if (pread(bar.get(), &id, 4, kRegId) != 4) return errno;
  if (id != kIdValue) return 200;
  if (auto w = write_file(d + "/config", std::string(1, '\x10'), kCacheLine); w.n != 1)
    return w.err;
  if (auto w = write_file(d + "/power_state", "D3hot"); w.n != 5) return w.err;
  if (auto w = write_file(d + "/power_state", "D0"); w.n != 2) return w.err;
  if (auto w = write_file(d + "/reset", "1"); w.n != 1) return w.err;
  return 0;
}

TEST_F(ViewPolicyTest, TheViewsUidIsPrivilegedOtherUsersAreNot) {
  const std::string d = dev("owned");
  EXPECT_EQ(as(kViewUid, [&] { return privileged_ops(d); }), 0);
  EXPECT_EQ(as(std::nullopt, [&] { return privileged_ops(d); }), 0);  // root always
  for (uid_t u : {kOtherUid, kNobody}) {
    SCOPED_TRACE(u);
    EXPECT_EQ(as(u, [&] { return open_errno(d + "/resource0", O_RDWR); }), EACCES);
    EXPECT_EQ(as(u, [&] { return write_file(d + "/config", "\x10", kCacheLine).err; }), EACCES);
    EXPECT_EQ(as(u, [&] { return write_file(d + "/power_state", "D3hot").err; }), EACCES);
    EXPECT_EQ(as(u, [&] { return write_file(d + "/reset", "1").err; }), EACCES);
  }
  EXPECT_EQ(as(std::nullopt,
               [&] { return write_file(d + "/config", std::string(1, '\0'), kCacheLine).n; }),
            1);
  // The view's uid is privileged in its own view only: in "full" it is
  // just another user.
  EXPECT_EQ(as(kViewUid, [&] { return open_errno(dev("full") + "/resource0", O_RDWR); }), EACCES);
  EXPECT_EQ(read_text(dev("full") + "/power_state"), "D0\n");
}

// --- config_read

TEST_F(ViewPolicyTest, ConfigReadFullGivesEveryoneTheWholeSpace) {
  const std::string root = read_config(dev("full"));
  ASSERT_EQ(root.size(), 4096u);
  EXPECT_EQ(as(kNobody, [&] { return read_config(dev("full")) == root ? 0 : 1; }), 0);
}

TEST_F(ViewPolicyTest, ConfigReadHeaderGivesOthers64Bytes) {
  const std::string root = read_config(dev("full"));
  const std::string d = dev("owned");
  EXPECT_EQ(as(kNobody,
               [&] {
                 const std::string got = read_config(d);
                 if (got.size() != 64) return 1;
                 if (got != root.substr(0, 64)) return 2;
                 // Past the header: end of file, as the kernel gives non-root.
                 if (pread_file(d + "/config", 4, 64).n != 0) return 3;
                 if (pread_file(d + "/config", 4, 0x100).n != 0) return 4;
                 return pread_file(d + "/config", 8, 60).n == 4 ? 0 : 5;
               }),
            0);
  // Privileged callers always read in full: the view's uid and root.
  EXPECT_EQ(as(kViewUid, [&] { return read_config(d) == root ? 0 : 1; }), 0);
  EXPECT_EQ(read_config(d), root);
}

TEST_F(ViewPolicyTest, LspciAsNobodySeesCapabilitiesOnlyWithFullConfig) {
  auto lspci = [&](const char* view) {
    return run_capture("runuser -u nobody -- lspci -A linux-sysfs -O sysfs.path=" +
                       daemon_->mnt(view) + " -s 01:00.0 -nn -vvv");
  };
  const std::string header = lspci("owned"), full = lspci("full");
  ASSERT_NE(full.find("1b36:10f0"), std::string::npos) << full;
  EXPECT_NE(full.find("Capabilities: ["), std::string::npos) << full;
  EXPECT_EQ(full.find("<access denied>"), std::string::npos) << full;
  EXPECT_NE(header.find("1b36:10f0"), std::string::npos) << header;
  EXPECT_NE(header.find("Capabilities: <access denied>"), std::string::npos) << header;
}

TEST_F(ViewPolicyTest, ConfigReadNoneRefusesOthers) {
  const std::string root = read_config(dev("full"));
  const std::string d = dev("none");
  for (uid_t u : {kNobody, kOtherUid}) {
    EXPECT_EQ(as(u, [&] { return open_errno(d + "/config", O_RDONLY); }), EACCES) << u;
  }
  EXPECT_EQ(as(kViewUid, [&] { return read_config(d) == root ? 0 : 1; }), 0);
  EXPECT_EQ(read_config(d), root);
  struct stat st {};
  ASSERT_EQ(stat((d + "/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // owner read/write, nobody else
  // The other files of the device still read for others.
  EXPECT_EQ(as(kNobody, [&] { return read_text(d + "/vendor") == "0x1b36\n" ? 0 : 1; }), 0);
  // Control: in "full" nobody opens config.
  EXPECT_EQ(as(kNobody, [&] { return open_errno(dev("full") + "/config", O_RDONLY); }), 0);
}

// --- config_write, bar_access

TEST_F(ViewPolicyTest, ConfigWriteFalseRefusesEvenRoot) {
  const std::string d = dev("ro");
  auto refused = [&] {
    const auto w = write_file(d + "/config", std::string(1, '\x20'), kCacheLine);
    return w.n == -1 && (w.err == EACCES || w.err == EPERM) ? 0 : (w.n >= 0 ? 100 : w.err);
  };
  EXPECT_EQ(as(std::nullopt, refused), 0);
  EXPECT_EQ(as(kViewUid, refused), 0);
  struct stat st {};
  ASSERT_EQ(stat((d + "/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u) << std::oct << st.st_mode;
  EXPECT_NE(read_config(d, 1, kCacheLine), "\x20");
  // Control: the same write through "full" works and shows through "ro" while
  // the writer holds its claim (closing hands the device over: baseline again).
  ASSERT_EQ(as(std::nullopt,
               [&] {
                 Fd w(dev("full") + "/config", O_RDWR);
                 if (::pwrite(w.get(), "\x20", 1, kCacheLine) != 1) return 1;
                 return read_config(d, 1, kCacheLine) == "\x20" ? 0 : 2;
               }),
            0);
}

TEST_F(ViewPolicyTest, BarAccessFalseHidesBarFilesEvenFromRoot) {
  const std::string d = dev("ro");
  const Names names = list_dir(d);
  ASSERT_TRUE(names.count("config")) << "the listing is empty";
  for (const char* bar : {"resource0", "resource2", "resource4"}) {
    EXPECT_EQ(names.count(bar), 0u) << bar;
    EXPECT_EQ(open_errno(d + "/" + bar, O_RDWR), ENOENT) << bar;
    EXPECT_EQ(as(kViewUid, [&] { return open_errno(d + "/" + bar, O_RDWR); }), ENOENT) << bar;
    // Control: "full" has it and root opens it.
    EXPECT_EQ(as(std::nullopt, [&] { return open_errno(dev("full") + "/" + bar, O_RDWR); }), 0);
  }
  // README: power_state and reset stay the privileged callers' own.
  ASSERT_TRUE(wait_handed_over(dev("full")));  // the control's BAR opens claimed the group
  EXPECT_EQ(as(kViewUid,
               [&] {
                 Fd p(d + "/power_state", O_WRONLY);  // one claim for both writes
                 return ::pwrite(p.get(), "D3hot", 5, 0) == 5 && ::pwrite(p.get(), "D0", 2, 0) == 2
                            ? 0
                            : 1;
               }),
            0);
  EXPECT_EQ(read_text(d + "/power_state"), "D0\n");
}

// --- mask_addresses

TEST_F(ViewPolicyTest, MaskAddressesShowsNoPhysicalAddress) {
  struct Bar {
    off_t reg;
    uint32_t unmasked, masked;
  };
  // BAR0 mem64 pref at 0x80_0000_0000 (BAR1 is its upper half), BAR2 mem32 at
  // 0xfe000000, BAR4 I/O at 0x1000, ROM at 0xfe010000 (decode off).
  const Bar bars[] = {{0x10, 0x0000000c, 0x0000000c},
                      {0x14, 0x00000080, 0},
                      {0x18, 0xfe000000, 0},
                      {0x20, 0x00001001, 0x00000001},
                      {0x30, 0xfe010000, 0}};
  const std::string masked = config_as(kNobody, dev("mask")),
                    plain = config_as(kNobody, dev("full"));
  ASSERT_EQ(masked.size(), 4096u);
  ASSERT_EQ(plain.size(), 4096u);
  for (const Bar& b : bars) {
    EXPECT_EQ(cfg32(plain, static_cast<size_t>(b.reg)), b.unmasked) << std::hex << b.reg;
    EXPECT_EQ(cfg32(masked, static_cast<size_t>(b.reg)), b.masked) << std::hex << b.reg;
  }
  // S4: addresses are hidden from unprivileged readers; privileged callers
  // (root, the view's uid) still see them.
  const std::string root_cfg = read_config(dev("mask"));
  EXPECT_EQ(cfg32(root_cfg, 0x18), 0xfe000000u) << "root reads the real BAR2 address";
  EXPECT_EQ(read_text(dev("mask") + "/resource"), read_text(dev("full") + "/resource"));
  // resource as nobody: start and end zero, flags kept; the control shows the address.
  std::istringstream m(file_as(kNobody, dev("mask") + "/resource")),
      p(file_as(kNobody, dev("full") + "/resource"));
  int line = 0, with_address = 0;
  for (std::string ms, me, mf, ps, pe, pf; m >> ms >> me >> mf && p >> ps >> pe >> pf; ++line) {
    EXPECT_EQ(ms, "0x0000000000000000") << "line " << line;
    EXPECT_EQ(me, "0x0000000000000000") << "line " << line;
    EXPECT_EQ(mf, pf) << "line " << line;
    with_address += ps != "0x0000000000000000";
  }
  EXPECT_EQ(line, 7);
  EXPECT_EQ(with_address, 4);  // BAR0, BAR2, BAR4, ROM
}

// Sizing still works with masked addresses (S4: the size mask is no address).
TEST_F(ViewPolicyTest, MaskedBarsStillSize) {
  const std::string cfg = dev("mask") + "/config";
  const int rc = as(std::nullopt, [&] {
    Fd w(cfg, O_RDWR);  // one claim for the sizing and the restore
    const std::string ones = le32_bytes(0xffffffff), addr = le32_bytes(0xfe000000);
    if (::pwrite(w.get(), ones.data(), 4, 0x18) != 4) return 1;
    const uint32_t size_mask = cfg32(pread_file(cfg, 4, 0x18).data, 0);
    if (::pwrite(w.get(), addr.data(), 4, 0x18) != 4) return 2;
    return size_mask == 0xffff0000 ? 0 : 3;  // 64 KiB
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(cfg32(read_config(dev("full"), 4, 0x18), 0), 0xfe000000u) << "restored";
}

// --- hide

TEST_F(ViewPolicyTest, HideDsnZeroesTheSerialOnly) {
  for (const char* bdf : {kEp, "0000:02:00.0"}) {
    const std::string plain = read_config(dev("full", bdf)), hidden = read_config(dev("mask", bdf));
    const uint32_t dsn = find_ext_cap(plain, PCI_EXT_CAP_ID_DSN);
    ASSERT_NE(dsn, 0u) << bdf;
    EXPECT_EQ(find_ext_cap(hidden, PCI_EXT_CAP_ID_DSN), dsn) << "the chain is intact";
    EXPECT_EQ(cfg32(plain, dsn + 8), 0x0001b36fu) << bdf;  // serial 0x0001b36f0000000N
    EXPECT_EQ(hidden.substr(dsn + 4, 8), std::string(8, '\0')) << bdf;
    EXPECT_EQ(config_as(kNobody, dev("mask", bdf)).substr(dsn + 4, 8), std::string(8, '\0'));
    // Everything past the BARs other than the serial is the same.
    std::string a = plain, b = hidden;
    a.replace(dsn + 4, 8, 8, '\0');
    EXPECT_EQ(a.substr(0x40), b.substr(0x40)) << bdf;
  }
}

// The simulator has no VPD: a sysfs-shaped tree whose function has one.
TEST(ViewHideVpdTest, HideVpdZeroesTheVpdRegisters) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  SysfsTree tree;
  FakeFunction f;
  f.bdf = "0000:05:00.0";
  f.config = make_config(0x8086, 0x1234, 0x020000);  // PM at 0x40
  f.config[0x41] = 0x50;                             // PM -> VPD
  f.config[0x50 + PCI_CAP_LIST_ID] = PCI_CAP_ID_VPD;
  put_le(f.config, 0x50 + PCI_VPD_ADDR, 0x8004, 2);
  put_le(f.config, 0x50 + PCI_VPD_DATA, 0xdeadbeef, 4);
  tree.add(f);
  ViewDaemon d({{"vpd", R"("hide": ["vpd"])"}, {"plain", ""}}, {"--backend=sysfs:" + tree.root()});
  ASSERT_TRUE(d.mounted()) << d.log();
  const std::string plain = read_config(d.dev("plain", f.bdf), 256);
  const std::string hidden = read_config(d.dev("vpd", f.bdf), 256);
  ASSERT_EQ(plain.size(), 256u);
  EXPECT_EQ(plain.substr(0x50, 8), std::string("\x03\x00\x04\x80\xef\xbe\xad\xde", 8));
  EXPECT_EQ(hidden.substr(0x50, 8), std::string("\x03\x00\x00\x00\x00\x00\x00\x00", 8));
  std::string a = plain;
  a.replace(0x52, 6, 6, '\0');
  EXPECT_EQ(a, hidden) << "only the VPD address and data registers differ";
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// --- doe_protocols [S6, S8]

TEST_F(ViewPolicyTest, DoeProtocolsLimitExchangesForEveryone) {
  const std::vector<uint32_t> cdat = {doe_dw0(0x1e98, 0x02), 3, 0};
  const std::vector<uint32_t> echo = {doe_dw0(0x1b36, 0x01), 4, 0x12345678, 0x9abcdef0};
  const std::string d1 = dev("doe1") + "/doe", d2 = dev("doe2") + "/doe";
  const std::vector<std::string> all = {"0001:00", "1e98:02", "1b36:01"};
  for (std::optional<uid_t> u : {std::optional<uid_t>{}, std::optional<uid_t>{kNobody}}) {
    SCOPED_TRACE(u ? "nobody" : "root");
    // Discovery is listed: the whole walk works and reports every protocol.
    EXPECT_EQ(as(u, [&] { return discovery_walk(d1) == all ? 0 : 1; }), 0);
    EXPECT_EQ(as(u, [&] { return doe_exchange(d1, cdat).err; }), EPERM);
    EXPECT_EQ(as(u, [&] { return doe_exchange(d1, echo).err; }), EPERM);
    EXPECT_EQ(as(u, [&] { return doe_exchange(d2, echo).dw == echo ? 0 : 1; }), 0);
    EXPECT_EQ(as(u, [&] { return doe_exchange(d2, cdat).err; }), EPERM);
  }
  // doe_features lists what Discovery reported, not what the view allows.
  EXPECT_EQ(list_dir(dev("doe1") + "/doe_features"), (Names{all.begin(), all.end()}));
  // Controls: without doe_protocols root has every protocol, nobody
  // Discovery and CDAT (S6.1).
  const std::string df = dev("full") + "/doe";
  EXPECT_EQ(doe_exchange(df, echo).dw, echo);
  EXPECT_EQ(doe_exchange(df, cdat).err, 0);
  EXPECT_EQ(as_nobody([&] { return doe_exchange(df, cdat).err; }), 0);
  EXPECT_EQ(as_nobody([&] { return doe_exchange(df, echo).err; }), EPERM);
}

}  // namespace
}  // namespace pcifs::testing
