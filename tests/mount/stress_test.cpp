// Mount stress (issue 3, section 3): several client processes hammer the real
// daemon while owners toggle power and reset, and nothing illegal happens.
//
// Clients are forked children (the parent forks before any thread exists;
// children may start threads), each reporting counts and failures through a
// pipe:
//   owner-g2, owner-g3  one per IOMMU group (g2: 01:00.0 + 01:00.1, g3: 02:00.0).
//       Threads: BAR pread/pwrite (scratch, ID, RAM), live mmaps touched under a
//       SIGBUS handler, and the power/reset toggler. S11: opening a BAR file
//       claims the whole group for the PROCESS, and power_state/reset writes
//       need that claim, so the toggler of a device must live in the process of
//       its BAR users; a toggler in another process would only ever get EBUSY.
//       Threads in one process also let the toggler pace itself on the BAR
//       users' progress, so every state is met by accesses.
//   cfg-root, cfg-nobody  config reads of all 6 devices at random offsets and
//       lengths, power_state/owner/status reads; root also probes the claims
//       (EBUSY), nobody the policy (EACCES).
//   doe-root, doe-nobody  2 threads each: Discovery, CDAT and echo exchanges
//       on 01:00.0 and 02:00.0, responses checked against the simulator's own
//       tables; nobody's echo must be EPERM [S6.1].
// The togglers publish each device's possible states in shared memory; an
// access whose window saw one stable state must have the one outcome the spec
// gives (D0: success; D3hot/D3cold: EIO or SIGBUS). Anything but 0/EIO (and
// the expected EBUSY/EACCES/EPERM of the probes) is a failure, as is a data
// mismatch within a window no power change or reset touched. At the end:
// `status` shows 0 violations on every device, all back in D0, no owner,
// no open handle, and the daemon exits cleanly (the fixture's TearDown).
//
// PCIFS_STRESS_SCALE (default 1) scales every op count; PCIFS_STRESS_SEED
// changes the random streams.
#include <dirent.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "fixtures/mount_fixture.hpp"
#include "fixtures/mount_stress.hpp"

namespace pcifs::testing::stress {
namespace {

const std::set<std::string> kAllBdfs = {"0000:00:00.0", "0000:00:01.0", "0000:00:02.0",
                                        "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"};

Plan plan_from_env() {
  double s = 1.0;
  if (const char* e = std::getenv("PCIFS_STRESS_SCALE")) s = std::clamp(std::atof(e), 0.02, 100.0);
  auto scaled = [s](int base, int floor) {
    return std::max(floor, static_cast<int>(std::lround(base * s)));
  };
  Plan p;
  p.cfg_ops = scaled(p.cfg_ops, 40);
  p.bar_ops = scaled(p.bar_ops, 60);
  p.map_ops = scaled(p.map_ops, 20);
  p.doe_ops = scaled(p.doe_ops, 10);
  p.toggles = scaled(p.toggles, 6);
  if (const char* e = std::getenv("PCIFS_STRESS_SEED")) p.seed = std::strtoull(e, nullptr, 0);
  return p;
}

// --- Owners: one process per IOMMU group, holding its claim for the whole
// run. Three threads: BAR pread/pwrite, mmap touches, and the toggler (this
// process's main thread). Data is checked only within windows no transition
// or reset touched (the published word did not move): D3cold loses BAR RAM,
// a reset the registers.
struct OwnerBar {
  int index, fd;
  bool io;
};
struct OwnerDev {
  const DevInfo* info = nullptr;
  std::vector<OwnerBar> bars;
  int cfg_fd = -1, power_fd = -1, reset_fd = -1;
  std::string baseline;  // command + BAR registers, as read in D0 before the run
  volatile uint64_t* map = nullptr;
  std::string state = "D0";
  uint64_t last_sync = 0;    // the published word at the map thread's last msync
  uint64_t map_excused = 0;  // the window of the map thread's last deferred msync EIO
  uint64_t bar_excused = 0;  // the window of the BAR thread's last deferred EIO
};

constexpr int kSkipped = -1000;        // a step that did not run
constexpr uint64_t kMapLen = 0x10000;  // BAR0 of every endpoint is at least 64 KiB
constexpr uint64_t kRwRam = 0x4000;    // pread/pwrite RAM window [0x4000, 0x5000)
constexpr uint64_t kMapRam = 0x8000;   // the page the mmap thread dirties

class Owner {
 public:
  Owner(const Ctx& c, int group, Report& r) : c_(c), group_(group), r_(r) {}

  bool setup() {
    for (const DevInfo& info : kDevs) {
      if (info.group != group_) continue;
      OwnerDev d;
      d.info = &info;
      const std::vector<int> bars =
          info.slot == 0 ? std::vector<int>{0, 2, 4} : std::vector<int>{0};
      for (int b : bars) {
        const int fd = open(c_.path(info.bdf, "resource" + std::to_string(b)).c_str(), O_RDWR);
        if (fd < 0) return fail_setup(info, "resource" + std::to_string(b));
        d.bars.push_back({b, fd, b == 4});
      }
      d.cfg_fd = open(c_.path(info.bdf, "config").c_str(), O_RDONLY);
      d.power_fd = open(c_.path(info.bdf, "power_state").c_str(), O_WRONLY);
      d.reset_fd = open(c_.path(info.bdf, "reset").c_str(), O_WRONLY);
      if (d.cfg_fd < 0 || d.power_fd < 0 || d.reset_fd < 0) return fail_setup(info, "control");
      d.baseline = restorable(d);
      void* m = mmap(nullptr, kMapLen, PROT_READ | PROT_WRITE, MAP_SHARED, d.bars[0].fd, 0);
      if (m == MAP_FAILED) return fail_setup(info, "mmap of resource0");
      d.map = static_cast<volatile uint64_t*>(m);
      devs_.push_back(std::move(d));
    }
    install_sigbus_handler();
    return true;
  }

  void run() {
    std::thread rw([this] { bar_worker(); });
    std::thread mp([this] { map_worker(); });
    toggler();
    rw.join();
    mp.join();
    for (auto* rep : {&rw_report_, &map_report_}) r_.merge(*rep);
  }

 private:
  bool fail_setup(const DevInfo& info, const std::string& what) {
    r_.fail(std::string("owner setup: ") + info.bdf + " " + what + ": " + err_text(errno));
    return false;
  }

  std::string restorable(const OwnerDev& d) {
    char buf[26];
    if (pread(d.cfg_fd, buf, 2, PCI_COMMAND) != 2 || pread(d.cfg_fd, buf + 2, 24, 0x10) != 24) {
      r_.fail(std::string("config read failed on ") + d.info->bdf);
    }
    return std::string(buf, sizeof buf);
  }

  Published& pub(const OwnerDev& d) { return c_.sh->pub[d.info->slot]; }

  // Judges every step of one access against the window it ran in; a step
  // that did not run (an earlier one failed) is kSkipped.
  Must judge(Report& r, const std::string& what, const OwnerDev& d, uint64_t w0, uint64_t w1,
             std::initializer_list<int> errs) {
    const Must m = device_must(w0, w1);
    for (int e : errs) {
      if (e != kSkipped && !acceptable(e, m)) {
        r.fail(what + " on " + d.info->bdf + ": " + err_text(e) + states_text(w0, w1));
      }
    }
    return m;
  }

  void bar_worker() {
    std::mt19937_64 rng(c_.plan.seed * 1000 + 40 + static_cast<uint64_t>(group_));
    Report& r = rw_report_;
    for (int i = 0; i < c_.plan.bar_ops; ++i, rw_ops_.fetch_add(1), r.count("ops_bar")) {
      OwnerDev& d = devs_[rng() % devs_.size()];
      const OwnerBar& b = d.bars[rng() % d.bars.size()];
      const unsigned kind = b.io ? 4 : static_cast<unsigned>(rng() % 4);
      const unsigned width = kind == 2 ? 1u << (rng() % 4) : 8;
      uint64_t off = kind == 0 ? 8 * (rng() % 2) : kind == 1 ? 0x40 : kRwRam + rng() % 0x1000;
      off &= ~uint64_t{width - 1};
      const uint64_t v = rng();
      uint64_t got = 0;
      int e1 = 0, e2 = kSkipped;
      auto attempt = [&] {
        e1 = 0;
        e2 = kSkipped;
        if (kind == 0 || kind == 2) {  // write, then read back the same register/RAM
          e1 = xfer_err(pwrite(b.fd, &v, width, static_cast<off_t>(off)), width);
          if (e1 == 0) e2 = xfer_err(pread(b.fd, &got, width, static_cast<off_t>(off)), width);
        } else {  // ID (4 bytes), a split 24-byte RAM read, or the I/O BAR
          uint8_t buf[24];
          const size_t len = kind == 3 ? 24 : 4;
          e1 = xfer_err(pread(b.fd, buf, len, static_cast<off_t>(kind == 4 ? 0 : off)), len);
          std::memcpy(&got, buf, 4);
        }
      };
      const uint64_t w0 = pub(d).load();
      attempt();
      uint64_t w1 = pub(d).load();
      // The lost writeback of the README (a page dirtied during a quiesce) is
      // also reported by the next pread/pwrite of the MAPPED file: the kernel's
      // direct I/O on an mmap-able direct_io file first waits for writeback and
      // returns the mapping's pending error (fuse_direct_io ->
      // filemap_write_and_wait_range). Once per window, and the retry must pass.
      if (b.index == 0 && device_must(w0, w1) == Must::kSucceed && (e1 == EIO || e2 == EIO) &&
          d.bar_excused != w0) {
        d.bar_excused = w0;
        r.count("bar_deferred_writeback_eio");
        attempt();
        w1 = pub(d).load();
      }
      const std::string what = "resource" + std::to_string(b.index) + " op " + std::to_string(kind);
      const Must m = judge(r, what, d, w0, w1, {e1, e2});
      r.count("bar_strict", m == Must::kEither ? 0 : 1);
      r.count(e1 == 0 && (e2 == 0 || e2 == kSkipped) ? "bar_ok" : "bar_eio");
      if (e1 != 0 || (e2 != 0 && e2 != kSkipped)) continue;
      if (kind == 1 && static_cast<uint32_t>(got) != kIdValue)
        r.fail(what + ": ID " + std::to_string(got));
      const uint64_t mask = width == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * width)) - 1;
      if ((kind == 0 || kind == 2) && m == Must::kSucceed) {
        r.count("bar_data_checked");
        if ((got & mask) != (v & mask))
          r.fail(what + ": read back differs at " + std::to_string(off));
      }
    }
    rw_done_.store(true);
  }

  void map_worker() {
    std::mt19937_64 rng(c_.plan.seed * 1000 + 50 + static_cast<uint64_t>(group_));
    Report& r = map_report_;
    for (int i = 0; i < c_.plan.map_ops; ++i, map_ops_.fetch_add(1), r.count("ops_map")) {
      OwnerDev& d = devs_[rng() % devs_.size()];
      const int fd = d.bars[0].fd;
      // 1. The ID register through the (read-only used) register page.
      uint64_t w0 = pub(d).load(), v = 0;
      bool ok = touch_load(d.map + 0x40 / 8, &v);
      uint64_t w1 = pub(d).load();
      count_touch(r, judge(r, "mapped ID load", d, w0, w1, {ok ? 0 : EIO}), ok);
      if (ok && static_cast<uint32_t>(v) != kIdValue)
        r.fail("mapped ID reads " + std::to_string(v));
      // 2. A store to a RAM page, msync, and pread: msync reaches the device [S5].
      const uint64_t off = kMapRam + 8 * (rng() % 64), val = rng();
      uint64_t got = 0;
      w0 = pub(d).load();
      ok = touch_store(d.map + off / 8, val);
      int ms = ok ? 0 : kSkipped;
      if (ok && msync(const_cast<uint64_t*>(d.map) + kMapRam / 8, 4096, MS_SYNC) != 0) ms = errno;
      // A page dirtied while a quiesce ran cannot be written back (the gate is
      // closed, S12); the kernel keeps that error for the NEXT msync, which may
      // fall in a later, stable window. Such an EIO belongs to the window of
      // the last msync: accepted once when the state moved since, then msync
      // again — this store's own writeback must succeed.
      // (A writeback another thread started -- the BAR thread's pwrite on this
      // file, the kernel's flusher -- may fail in a quiesce and be recorded
      // only after our last msync returned: so a stable window may meet it
      // too. Once per window; the retry is this store's own and must pass.)
      if (ms == EIO && d.map_excused != w0) {
        d.map_excused = w0;
        r.count("map_deferred_writeback_eio");
        ms = msync(const_cast<uint64_t*>(d.map) + kMapRam / 8, 4096, MS_SYNC) != 0 ? errno : 0;
      }
      int pe = xfer_err(pread(fd, &got, 8, static_cast<off_t>(off)), 8);
      // The same lost writeback is also reported by a direct-I/O pread of the
      // mapped file (the mapping's AS_EIO flag, apart from msync's errseq; see
      // the BAR thread): excused on the same terms, and the retry must pass.
      if (pe == EIO && (d.last_sync != w0 || d.map_excused == w0)) {
        r.count("map_deferred_writeback_eio_pread");
        pe = xfer_err(pread(fd, &got, 8, static_cast<off_t>(off)), 8);
      }
      w1 = pub(d).load();
      d.last_sync = w1;
      const std::string step = std::string("mapped store+msync+pread (store ") +
                               (ok ? "ok" : "EIO") + ", msync " + err_text(ms) + ", pread " +
                               err_text(pe) + ")";
      Must m = judge(r, step, d, w0, w1, {ok ? 0 : EIO, ms, pe});
      count_touch(r, m, ok);
      if (m == Must::kSucceed && ok && ms == 0 && pe == 0) {
        r.count("map_data_checked");
        if (got != val) r.fail(std::string("msync'd store not on the device: ") + d.info->bdf);
      }
      // 3. The mapping never shows data the device no longer holds [S12].
      uint64_t mv = 0;
      w0 = pub(d).load();
      ok = touch_load(d.map + off / 8, &mv);
      pe = xfer_err(pread(fd, &got, 8, static_cast<off_t>(off)), 8);
      w1 = pub(d).load();
      m = judge(r, "mapped load vs pread", d, w0, w1, {ok ? 0 : EIO, pe});
      count_touch(r, m, ok);
      if (m == Must::kSucceed && ok && pe == 0) {
        r.count("map_data_checked");
        if (mv != got) r.fail(std::string("stale mapping on ") + d.info->bdf);
      }
    }
    map_done_.store(true);
  }

  static void count_touch(Report& r, Must m, bool ok) {
    r.count("map_strict", m == Must::kEither ? 0 : 1);
    r.count(ok ? "map_ok" : "map_sigbus");
  }

  // --- the toggler: every transition is published before it starts (busy,
  // with the states it may pass) and after it ends (the state reached).
  void toggler() {
    std::mt19937_64 rng(c_.plan.seed * 1000 + 60 + static_cast<uint64_t>(group_));
    using Seq = std::vector<std::string>;
    const Seq seqs[] = {{"D3hot", "D0"},
                        {"D3cold", "D0"},
                        {},
                        {"D3hot", "D3cold", "D0"},
                        {"D3cold", "D3hot", "D0"}};
    // Gate: no transition before both BAR threads made an access (in D0), and
    // a DOE client one on this group's DOE device, or finished.
    const int doe_slot = group_ == 0 ? 0 : 2;
    if (!wait_until([&] {
          return (rw_done_.load() || rw_ops_.load() > 0) &&
                 (map_done_.load() || map_ops_.load() > 0) &&
                 (c_.sh->doe_running.load() == 0 || c_.sh->doe_progress[doe_slot].load() > 0);
        })) {
      r_.fail("toggler: the clients made no access within " + std::to_string(kGateLimit.count()) +
              " s of the start (bar " + std::to_string(rw_ops_.load()) + ", map " +
              std::to_string(map_ops_.load()) + ")");
    }
    for (int i = 0; i < c_.plan.toggles; ++i, r_.count("ops_toggle")) {
      OwnerDev& d = devs_[rng() % devs_.size()];
      const Seq& seq = seqs[rng() % std::size(seqs)];
      if (seq.empty()) reset(d);
      for (const auto& s : seq) go(d, s);
      pace(d);  // and some accesses in D0 before the next step
    }
  }

  void go(OwnerDev& d, const std::string& target) {
    uint32_t bits = power_bit(d.state) | power_bit(target) | kBusy;
    if (d.state == "D3cold" && target == "D3hot") bits |= kInD0;  // through D0
    pub(d).set(bits);
    const int e = xfer_err(pwrite(d.power_fd, target.data(), target.size(), 0), target.size());
    if (e != 0)
      r_.fail(std::string(d.info->bdf) + " " + d.state + "->" + target + ": " + err_text(e));
    if (e == 0) d.state = target;
    pub(d).set(power_bit(d.state));
    r_.count("to_" + target);
    if (e == 0 && target == "D0") check_restored(d, "D0");
    pace(d);
  }

  void reset(OwnerDev& d) {
    pub(d).set(power_bit(d.state) | kInD0 | kBusy);
    const int e = xfer_err(pwrite(d.reset_fd, "1", 1, 0), 1);
    if (e != 0) r_.fail(std::string(d.info->bdf) + " reset: " + err_text(e));
    d.state = "D0";  // even a failed reset leaves the device in D0
    pub(d).set(kInD0);
    r_.count("resets");
    check_restored(d, "reset");
    pace(d);
  }

  // Back in D0, the config state the core saved is restored [S9, S10].
  void check_restored(const OwnerDev& d, const char* after) {
    if (restorable(d) != d.baseline) {
      r_.fail(std::string(d.info->bdf) + ": command/BARs not restored after " + after);
    }
  }

  // Lets the state just reached meet accesses: waits until both BAR threads
  // and a DOE client made progress, or finished. A gate on evidence, not a
  // delay: its limit only guards against a client that stopped progressing.
  void pace(const OwnerDev& d) {
    const int slot = d.info->slot;
    const uint64_t rw0 = rw_ops_.load(), map0 = map_ops_.load();
    const uint64_t doe0 = c_.sh->doe_progress[slot].load();
    bool rw = false, mp = false, doe = false;
    const bool met = wait_until([&] {
      rw = rw_done_.load() || rw_ops_.load() >= rw0 + 4;
      mp = map_done_.load() || map_ops_.load() >= map0 + 1;
      doe = slot == 1 || c_.sh->doe_running.load() == 0 || c_.sh->doe_progress[slot].load() > doe0;
      return rw && mp && doe;
    });
    if (!met) {
      r_.fail(std::string("toggler: no progress within ") + std::to_string(kGateLimit.count()) +
              " s in " + d.state + " on " + d.info->bdf + " (bar " + (rw ? "ok" : "stuck") +
              ", map " + (mp ? "ok" : "stuck") + ", doe " + (doe ? "ok" : "stuck") + ")");
    }
  }

  const Ctx& c_;
  const int group_;
  Report& r_;
  std::vector<OwnerDev> devs_;
  Report rw_report_, map_report_;
  std::atomic<uint64_t> rw_ops_{0}, map_ops_{0};
  std::atomic<bool> rw_done_{false}, map_done_{false};
};

void owner_main(const Ctx& c, int group, Phases& ph, Report& r) {
  Owner o(c, group, r);
  const bool ok = o.setup();
  ph.ready();
  ph.go();
  if (ok) o.run();
  ph.release();  // keep the claim until every prober is done
}

// --- children and the phases they go through together.
struct Kid {
  std::string name;
  bool owner = false;
  pid_t pid = -1;
  int report_fd = -1;
  int status = -1;
};

struct Pipes {
  int ready[2], go[2], release[2];
  Pipes() {
    if (pipe(ready) != 0 || pipe(go) != 0 || pipe(release) != 0) std::abort();
  }
};

void wait_eof(int fd) {
  char c;
  while (read(fd, &c, 1) > 0 || errno == EINTR) {
  }
}

Kid spawn(const std::string& name, bool owner, std::optional<uid_t> uid, const Pipes& p,
          const std::function<void(Phases&, Report&)>& body) {
  int rep[2];
  if (pipe(rep) != 0) std::abort();
  Kid k{name, owner, fork(), rep[0]};
  if (k.pid == 0) {
    close(rep[0]);
    close(p.ready[0]);
    close(p.go[1]);
    close(p.release[1]);
    Report r;
    if (uid && (setresgid(*uid, *uid, *uid) != 0 || setresuid(*uid, *uid, *uid) != 0)) {
      r.fail(name + ": cannot become uid " + std::to_string(*uid));
    }
    Phases ph{[&] { (void)!write(p.ready[1], "r", 1); }, [&] { wait_eof(p.go[0]); },
              [&] { wait_eof(p.release[0]); }};
    if (r.failures() == 0) body(ph, r);
    const std::string text = r.serialize();
    (void)!write(rep[1], text.data(), text.size());
    _exit(0);
  }
  close(rep[1]);
  return k;
}

std::string drain(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);) {
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// What each thread of a hung process waits in: the daemon's and the clients'.
std::string stacks_of(pid_t pid) {
  std::string out = "--- pid " + std::to_string(pid) + "\n";
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  while (dirent* e = d ? readdir(d) : nullptr) {
    if (e->d_name[0] == '.') continue;
    const std::string t = dir + "/" + e->d_name;
    out += std::string("tid ") + e->d_name + " " + slurp(t + "/comm") + slurp(t + "/stack");
  }
  if (d) closedir(d);
  return out.substr(0, 20000);
}

// A daemon whose main thread is gone (a crash, a sanitizer report) may keep one
// thread stuck in the kernel (an invalidation waiting for writeback to itself):
// then it is a zombie leader, not an exited process.
bool daemon_gone(const Daemon& d) {
  if (!d.alive()) return true;
  const std::string stat = slurp("/proc/" + std::to_string(d.pid()) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

enum class Reaped { kAll, kDeadline, kDaemonGone };

// Reaps `kids` (those with status -1) until `deadline` or the daemon's end.
Reaped reap(const std::vector<Kid*>& kids, std::chrono::steady_clock::time_point deadline,
            const Daemon& daemon) {
  for (;;) {
    bool all = true;
    for (Kid* k : kids) {
      int st = 0;
      if (k->status == -1 && waitpid(k->pid, &st, WNOHANG) == k->pid) k->status = st;
      all = all && k->status != -1;
    }
    if (all) return Reaped::kAll;
    if (daemon_gone(daemon)) return Reaped::kDaemonGone;
    if (std::chrono::steady_clock::now() > deadline) return Reaped::kDeadline;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class StressTest : public MountTest {
 protected:
  // A liveness guard, not a timing assertion: a hung client is a deadlock.
  static constexpr auto kGuard = std::chrono::seconds(400);

  // Reaps, and when that fails: reports where everyone waits, kills the
  // clients and aborts the FUSE connection (MNT_FORCE), so that no process
  // stays blocked in a request the daemon will never answer.
  void reap_or_give_up(std::vector<Kid>& kids, const std::vector<Kid*>& some, const char* phase,
                       std::chrono::steady_clock::time_point deadline) {
    const Reaped r = reap(some, deadline, *d_);
    if (r == Reaped::kAll) return;
    std::string diag = std::string(r == Reaped::kDaemonGone ? "the daemon died" : "deadline") +
                       " with clients running (" + phase + ")\n" + stacks_of(d_->pid());
    for (Kid& k : kids) {
      if (k.status == -1) diag += k.name + ": " + stacks_of(k.pid);
    }
    ADD_FAILURE() << diag << "\ndaemon log:\n" << d_->log();
    for (Kid& k : kids) {
      if (k.status == -1) kill(k.pid, SIGKILL);
    }
    umount2(d_->mnt().c_str(), MNT_FORCE);
    std::vector<Kid*> all;
    for (Kid& k : kids) all.push_back(&k);
    reap(all, std::chrono::steady_clock::now() + std::chrono::seconds(20), *d_);
    // An aborted mount no longer looks like FUSE to the fixture: detach it here.
    umount2(d_->mnt().c_str(), MNT_DETACH);
  }

  // Polls `status` (bounded) until every claim and handle of the clients is
  // gone: releases of dead processes reach the daemon asynchronously.
  nlohmann::json settled_status() {
    nlohmann::json s;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    do {
      s = nlohmann::json::parse(read_text(d_->mnt() + "/status"), nullptr, false);
      bool idle = !s.is_discarded();
      for (const auto& d : idle ? s["devices"] : nlohmann::json::array()) {
        idle = idle && d["owner"] == "none" && d["open_handles"] == 0;
      }
      if (idle) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < end);
    return s;
  }
};

TEST_F(StressTest, ClientProcessesAgainstPowerAndResetStayLegal) {
  const Plan plan = plan_from_env();
  Shared* sh = make_shared_region<Shared>();
  ASSERT_NE(sh, nullptr);
  const Ctx ctx{d_->mnt(), sh, plan};
  Pipes p;
  std::vector<Kid> kids;
  for (int g = 0; g < 2; ++g) {
    kids.push_back(spawn(g == 0 ? "owner-g2" : "owner-g3", true, std::nullopt, p,
                         [&, g](Phases& ph, Report& r) { owner_main(ctx, g, ph, r); }));
    sh->owner_pid[g].store(kids.back().pid);
  }
  for (bool root : {true, false}) {
    const std::string who = root ? "root" : "nobody";
    const auto uid = root ? std::nullopt : std::optional<uid_t>(kNobody);
    kids.push_back(spawn("cfg-" + who, false, uid, p,
                         [&, root](Phases& ph, Report& r) { config_main(ctx, root, ph, r); }));
    kids.push_back(spawn("doe-" + who, false, uid, p,
                         [&, root](Phases& ph, Report& r) { doe_main(ctx, root, ph, r); }));
  }
  close(p.ready[1]);
  close(p.go[0]);
  close(p.release[0]);
  size_t ready = 0;
  for (char c; ready < kids.size() && read(p.ready[0], &c, 1) == 1;) ++ready;
  close(p.ready[0]);
  EXPECT_EQ(ready, kids.size()) << "a client died during its setup";

  const auto t0 = std::chrono::steady_clock::now();
  close(p.go[1]);  // every client starts now
  std::vector<Kid*> others, owners;
  for (Kid& k : kids) (k.owner ? owners : others).push_back(&k);
  reap_or_give_up(kids, others, "clients", t0 + kGuard);
  close(p.release[1]);  // the owners' claims end only after every prober is done
  reap_or_give_up(kids, owners, "owners", t0 + kGuard);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  Report all;
  for (Kid& k : kids) {
    // A child that could not be reaped may still hold its pipe: never block on it.
    Report r = k.status == -1 ? Report() : Report::parse(drain(k.report_fd));
    EXPECT_TRUE(WIFEXITED(k.status) && WEXITSTATUS(k.status) == 0)
        << k.name << " ended with wait status " << k.status;
    EXPECT_EQ(r.failures(), 0u) << k.name;
    for (const auto& m : r.messages()) ADD_FAILURE() << k.name << ": " << m;
    all.merge(r);
  }
  std::string counts;
  uint64_t total = 0;
  for (const auto& [name, v] : all.counts()) {
    counts += " " + name + "=" + std::to_string(v);
    if (name.rfind("ops_", 0) == 0) total += v;
  }
  std::printf("[ stress ] %.1f s, %llu client ops:%s\n", secs,
              static_cast<unsigned long long>(total), counts.c_str());

  // Every client did its whole plan.
  EXPECT_EQ(all.get("ops_bar"), 2u * static_cast<unsigned>(plan.bar_ops));
  EXPECT_EQ(all.get("ops_map"), 2u * static_cast<unsigned>(plan.map_ops));
  EXPECT_EQ(all.get("ops_cfg"), 2u * static_cast<unsigned>(plan.cfg_ops));
  EXPECT_EQ(all.get("ops_doe"), 4u * static_cast<unsigned>(plan.doe_ops));
  EXPECT_EQ(all.get("ops_toggle"), 2u * static_cast<unsigned>(plan.toggles));
  EXPECT_EQ(all.get("doe_timeouts"), 1u) << "02:00.0 doe.1 never answers";
  // Not vacuous: both outcomes happened, strict windows were judged, data checked.
  for (const char* c : {"bar_ok",
                        "bar_eio",
                        "bar_strict",
                        "bar_data_checked",
                        "map_ok",
                        "map_sigbus",
                        "map_strict",
                        "map_data_checked",
                        "doe_ok",
                        "doe_eio",
                        "doe_strict",
                        "cfg_reads",
                        "claim_probes_ebusy",
                        "policy_probes_denied",
                        "doe_eperm",
                        "status_checks",
                        "rom_reads",
                        "to_D3hot",
                        "to_D3cold",
                        "resets"}) {
    EXPECT_GT(all.get(c), 0u) << c;
  }

  EXPECT_TRUE(d_->alive()) << d_->log();
  const nlohmann::json s = settled_status();
  ASSERT_FALSE(s.is_discarded());
  for (const auto& problem : violation_problems(s.dump(), kAllBdfs)) ADD_FAILURE() << problem;
  uint64_t resets = 0;
  for (const auto& d : s["devices"]) {
    EXPECT_EQ(d["power_state"], "D0") << d["bdf"];
    EXPECT_EQ(d["owner"], "none") << d["bdf"];
    EXPECT_EQ(d["open_handles"], 0) << d["bdf"];
    for (const auto& mb : d["doe"]) {
      if (mb["mailbox"] == 0) {
        EXPECT_FALSE(mb["dead"].get<bool>()) << d["bdf"];
      }
    }
    resets += d["counters"]["resets"].get<uint64_t>();
  }
  EXPECT_EQ(resets, all.get("resets")) << "status counts every reset the togglers wrote";
  const std::string log = d_->log();
  for (const char* bad : {"Sanitizer", "runtime error", "internal error"}) {
    EXPECT_EQ(log.find(bad), std::string::npos) << log;
  }
  if (HasFailure()) {  // keep the whole log: the fixture deletes its copy
    const std::string keep = "/tmp/pcifs-stress-log-" + std::to_string(getpid()) + ".txt";
    std::ofstream(keep) << log;
    std::fprintf(stderr, "daemon log in %s; its last 8 KiB:\n%s\n", keep.c_str(),
                 log.substr(log.size() > 8192 ? log.size() - 8192 : 0).c_str());
  }
}

// --- Negative controls: the checks above can fail.

// A device whose DOE mailbox holds 4 dwords: an 8-dword echo through the mount
// overruns it, which the simulator counts as a violation (the core cannot know
// the capacity: PCIe has no register for it). The same check that passes the
// stress run must flag it, through the real daemon and its `status`.
class StressControlTest : public MountTest {
 protected:
  std::vector<std::string> daemon_args() override {
    char path[] = "/tmp/pcifs-stress-set-XXXXXX";
    const int fd = mkstemp(path);
    set_file_ = path;
    const std::string text = R"({"devices": [{"bdf": "0000:05:00.0", "vendor": "0x1b36",
      "device": "0x10f2", "class": "0x120000",
      "config_size": 4096, "bars": [{"index": 0, "type": "mem32", "size": 65536}],
      "capabilities": {"pm": {}, "pcie": {}, "doe": [{"echo": true, "mailbox_dwords": 4}]}}]})";
    if (fd < 0 || write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      ADD_FAILURE() << "cannot write " << path;
    }
    if (fd >= 0) close(fd);
    return {"--backend=sim:" + set_file_};
  }
  void TearDown() override {
    MountTest::TearDown();
    unlink(set_file_.c_str());
  }
  std::string set_file_;
};

TEST_F(StressControlTest, ViolationCheckFlagsAnOverrunMailbox) {
  const std::set<std::string> bdfs = {"0000:05:00.0"};
  EXPECT_TRUE(violation_problems(read_text(d_->mnt() + "/status"), bdfs).empty())
      << "clean before the overrun";
  std::vector<uint32_t> echo = {0x00011b36u, 8, 1, 2, 3, 4, 5, 6};
  const int fd = open((d_->dev("0000:05:00.0") + "/doe").c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << strerror(errno);
  EXPECT_EQ(write(fd, echo.data(), 32), 32) << strerror(errno);
  char buf[64];
  EXPECT_EQ(read(fd, buf, sizeof buf), -1) << "the device cannot answer an overrun request";
  close(fd);
  auto problems = violation_problems(read_text(d_->mnt() + "/status"), bdfs);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("0000:05:00.0: violations"), std::string::npos) << problems[0];
}

// The parser itself, on synthetic status text: no count, a nonzero count, a
// missing device and bad JSON are all flagged.
TEST(StressCheckTest, ViolationParserFlagsWhatIsWrong) {
  const std::set<std::string> two = {"a", "b"};
  auto st = [](const std::string& devs) { return R"({"devices": [)" + devs + "]}"; };
  EXPECT_TRUE(
      violation_problems(st(R"({"bdf":"a","violations":0},{"bdf":"b","violations":0})"), two)
          .empty());
  EXPECT_EQ(violation_problems(st(R"({"bdf":"a","violations":0},{"bdf":"b","violations":3})"), two)
                .size(),
            1u);
  EXPECT_EQ(violation_problems(st(R"({"bdf":"a","violations":0},{"bdf":"b"})"), two).size(), 1u);
  EXPECT_EQ(violation_problems(st(R"({"bdf":"a","violations":0})"), two).size(), 1u);
  EXPECT_EQ(violation_problems("{", two).size(), 1u);
}

// The judgement: a stable D0 window must succeed, a stable low-power one must
// be EIO, and no other errno is ever acceptable for a device access.
TEST(StressCheckTest, JudgementFlagsUnexpectedOutcomes) {
  Published pub;
  pub.set(kInD0);
  const uint64_t d0 = pub.load();
  pub.set(kInD0 | kInD3hot | kBusy);
  const uint64_t moving = pub.load();
  pub.set(kInD3hot);
  const uint64_t d3 = pub.load();
  EXPECT_FALSE(acceptable(EIO, device_must(d0, d0)));
  EXPECT_TRUE(acceptable(0, device_must(d0, d0)));
  EXPECT_FALSE(acceptable(0, device_must(d3, d3)));
  EXPECT_TRUE(acceptable(EIO, device_must(d3, d3)));
  EXPECT_TRUE(acceptable(EIO, device_must(moving, moving)));
  EXPECT_TRUE(acceptable(0, device_must(d0, d3)));
  for (int bad : {ENODEV, EBUSY, ETIMEDOUT, EINVAL}) {
    EXPECT_FALSE(acceptable(bad, device_must(d0, d3))) << bad;
  }
  EXPECT_FALSE(power_text_consistent("D0\n", d3, d3));
  EXPECT_TRUE(power_text_consistent("D3hot\n", d3, d3));
  EXPECT_FALSE(power_text_consistent("D2\n", d0, d3));
  Report r;
  r.count("x", 3);
  r.fail("line\nbreak");
  Report back = Report::parse(r.serialize());
  EXPECT_EQ(back.get("x"), 3u);
  EXPECT_EQ(back.failures(), 1u);
  ASSERT_EQ(back.messages().size(), 1u);
  const std::string& m = back.messages()[0];
  EXPECT_EQ(m.substr(m.find(']')), "] line break") << m;
}

}  // namespace
}  // namespace pcifs::testing::stress
