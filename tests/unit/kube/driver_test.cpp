// The driver: claims become views through the host daemon, idempotently, with
// a checkpoint that a restarted agent resumes from. The host daemon and the
// API server are fakes here (the mount tier runs the real ones).
#include "kube/driver.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "fixtures/kube_claims.hpp"
#include "kube/claim.hpp"

namespace pcifs::kube {
namespace {

using nlohmann::json;
using testing::ClaimSpec;
using testing::make_claim;

class FakeDaemon : public HostDaemon {
 public:
  json devices = json::array();
  std::map<std::string, json> views;  // name -> view
  std::vector<std::string> verbs;
  bool down = false;             // no answer at all (socket gone)
  bool lose_add_answer = false;  // the add is done, its answer lost
  std::string refuse_add;        // non-empty: add answers ok:false with this

  Result<json> call(const json& req, std::string* error) override {
    const std::string verb = req.value("verb", "");
    verbs.push_back(verb);
    if (down) {
      *error = "cannot connect to /run/pcifs/control.sock: Connection refused";
      return Errno(EHOSTDOWN);
    }
    if (verb == "devices") return json{{"ok", true}, {"devices", devices}};
    if (verb == "rm") {
      views.erase(req["name"].get<std::string>());
      return json{{"ok", true}};
    }
    if (verb == "add") {
      if (!refuse_add.empty()) return json{{"ok", false}, {"error", refuse_add}};
      const json& v = req["view"];
      const std::string name = v["name"];
      auto it = views.find(name);
      if (it != views.end() && it->second != v)
        return json{{"ok", false}, {"error", "exists with another policy"}};
      views[name] = v;
      if (lose_add_answer) {
        *error = "connection closed by the daemon";
        return Errno(ECONNRESET);
      }
      return json{{"ok", true},
                  {"view", {{"name", name}, {"cdi_device", "pcifs.io/view=" + name}}}};
    }
    return json{{"ok", false}, {"error", "verb"}};
  }
  size_t count(const std::string& verb) const {
    return static_cast<size_t>(std::count(verbs.begin(), verbs.end(), verb));
  }
};

class FakeClaims : public ClaimReader {
 public:
  std::map<std::string, json> claims;
  int reads = 0;
  std::string fail;  // non-empty: every read fails with it
  Result<json> get_claim(const std::string& ns, const std::string& name,
                         std::string* error) override {
    ++reads;
    if (!fail.empty()) {
      *error = fail;
      return Errno(EIO);
    }
    auto it = claims.find(ns + "/" + name);
    if (it == claims.end()) {
      *error = "resourceclaims \"" + name + "\" not found";
      return Errno(ENOENT);
    }
    return it->second;
  }
};

json fn(const std::string& bdf, int group, const std::string& health = "ok") {
  return json{{"bdf", bdf},           {"vendor", "0x1b36"}, {"device", "0x10f0"},
              {"class", "0x050210"},  {"bridge", false},    {"iommu_group", group},
              {"numa_node", nullptr}, {"driver", nullptr},  {"pcie_root", "pci0000:00"},
              {"health", health}};
}

class DriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/pcifs-kube-cp-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    daemon_.devices = json::array({fn("0000:01:00.0", 1), fn("0000:03:00.0", 7),
                                   fn("0000:03:00.1", 7), fn("0000:05:00.0", 9, "bound:nvidia")});
    start();
  }
  void TearDown() override {
    driver_.reset();
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  void start() {
    driver_.reset();
    std::string error;
    auto cp = Checkpoint::load(path(), &error);
    ASSERT_TRUE(cp) << error;
    driver_ = std::make_unique<Driver>("node-a", daemon_, claims_, std::move(*cp));
  }
  std::string path() const { return dir_ + "/checkpoint.json"; }
  ClaimRef add_claim(ClaimSpec s) {
    claims_.claims[s.ns + "/" + s.name] = make_claim(s);
    return ClaimRef{s.ns, s.uid, s.name};
  }
  PrepareResult prepare(const ClaimRef& c) { return driver_->prepare({c})[c.uid]; }

  std::string dir_;
  FakeDaemon daemon_;
  FakeClaims claims_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(DriverTest, PrepareMakesOneViewWithExactlyTheAllocatedFunctions) {
  ClaimSpec s;
  s.devices = {"pci-0000-01-00-0", "iommu-group-7"};
  s.parameters = json{{"config_write", false}, {"uid", 1000}};
  const ClaimRef c = add_claim(s);
  auto r = prepare(c);
  ASSERT_EQ(r.error, "");
  const std::string view = view_name_for(c.uid);
  ASSERT_EQ(daemon_.views.count(view), 1u);
  EXPECT_EQ(daemon_.views[view]["devices"], (json{"0000:01:00.0", "0000:03:00.0", "0000:03:00.1"}));
  EXPECT_EQ(daemon_.views[view]["config_write"], false);
  EXPECT_EQ(daemon_.views[view]["uid"], 1000);
  ASSERT_EQ(r.devices.size(), 2u);
  EXPECT_EQ(r.devices[0].device, "pci-0000-01-00-0");
  EXPECT_EQ(r.devices[0].pool, "node-a");
  EXPECT_EQ(r.devices[0].request_names, std::vector<std::string>{"pci"});
  EXPECT_EQ(r.devices[1].cdi_device_ids, std::vector<std::string>{"pcifs.io/view=" + view});
  EXPECT_EQ(driver_->entries().at(c.uid).state, CheckpointEntry::State::kPrepared);
}

TEST_F(DriverTest, PrepareIsIdempotentAndSurvivesARestart) {
  const ClaimRef c = add_claim(ClaimSpec{});
  auto first = prepare(c);
  ASSERT_EQ(first.error, "");
  auto again = prepare(c);
  EXPECT_EQ(again.error, "");
  EXPECT_EQ(daemon_.count("add"), 1u) << "a repeated Prepare adds nothing";
  EXPECT_EQ(claims_.reads, 1);
  // A restarted agent answers from its checkpoint, even with the API server down.
  start();
  claims_.fail = "connection refused";
  auto after = prepare(c);
  EXPECT_EQ(after.error, "");
  ASSERT_EQ(after.devices.size(), 1u);
  EXPECT_EQ(after.devices[0].cdi_device_ids, first.devices[0].cdi_device_ids);
  // Control: a claim it never prepared needs the API server.
  ClaimSpec other;
  other.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000002";
  other.name = "other";
  const ClaimRef o = add_claim(other);
  EXPECT_NE(prepare(o).error.find("connection refused"), std::string::npos);
}

TEST_F(DriverTest, TwoClaimsOfOnePodAreRefusedTogether) {
  ClaimSpec a, b;
  b.name = "second";
  b.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000002";
  b.devices = {"iommu-group-7"};
  const ClaimRef ca = add_claim(a), cb = add_claim(b);
  auto r = driver_->prepare({ca, cb});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_NE(r[ca.uid].error.find("one ResourceClaim"), std::string::npos) << r[ca.uid].error;
  EXPECT_EQ(r[ca.uid].error, r[cb.uid].error);
  EXPECT_EQ(daemon_.count("add"), 0u);
}

TEST_F(DriverTest, UnhealthyOrVanishedDevicesAreNeverPrepared) {
  ClaimSpec s;
  s.devices = {"pci-0000-05-00-0"};
  const ClaimRef c = add_claim(s);
  auto r = prepare(c);
  EXPECT_NE(r.error.find("unhealthy (0000:05:00.0: bound:nvidia)"), std::string::npos) << r.error;
  ClaimSpec g;
  g.devices = {"pci-0000-09-00-0"};
  g.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000003";
  auto r2 = prepare(add_claim(g));
  EXPECT_NE(r2.error.find("does not exist on node node-a"), std::string::npos) << r2.error;
  EXPECT_EQ(daemon_.count("add"), 0u);
  EXPECT_TRUE(driver_->entries().empty());
}

TEST_F(DriverTest, ARefusedViewLeavesNothingAndALostAnswerIsRetried) {
  const ClaimRef c = add_claim(ClaimSpec{});
  daemon_.refuse_add = "0000:01:00.0: iommu group 1 is in view c1 of uid 5";
  auto r = prepare(c);
  EXPECT_NE(r.error.find("refused the view: 0000:01:00.0: iommu group 1"), std::string::npos)
      << r.error;
  EXPECT_TRUE(driver_->entries().empty());
  // The add happens but its answer is lost: the entry says "preparing", and
  // the kubelet's retry finds the view there (add is idempotent).
  daemon_.refuse_add.clear();
  daemon_.lose_add_answer = true;
  EXPECT_NE(prepare(c).error.find("connection closed"), std::string::npos);
  EXPECT_EQ(driver_->entries().at(c.uid).state, CheckpointEntry::State::kPreparing);
  daemon_.lose_add_answer = false;
  start();  // even across a restart
  EXPECT_EQ(driver_->recover(), 1u) << "a preparing entry waits for the kubelet";
  auto retry = prepare(c);
  EXPECT_EQ(retry.error, "");
  EXPECT_EQ(driver_->entries().at(c.uid).state, CheckpointEntry::State::kPrepared);
}

TEST_F(DriverTest, UnprepareRemovesTheViewIdempotently) {
  const ClaimRef c = add_claim(ClaimSpec{});
  ASSERT_EQ(prepare(c).error, "");
  EXPECT_EQ(driver_->unprepare({c})[c.uid], "");
  EXPECT_TRUE(daemon_.views.empty());
  EXPECT_TRUE(driver_->entries().empty());
  EXPECT_EQ(driver_->unprepare({c})[c.uid], "") << "again: nothing to do, no error";
  // A claim the checkpoint never knew (a lost checkpoint): its view goes by name.
  daemon_.views["k8s-abc"] = json::object();
  EXPECT_EQ(driver_->unprepare({ClaimRef{"default", "abc", "x"}})["abc"], "");
  EXPECT_EQ(daemon_.views.count("k8s-abc"), 0u);
}

TEST_F(DriverTest, AnUnprepareInterruptedIsFinishedAtTheNextStart) {
  const ClaimRef c = add_claim(ClaimSpec{});
  ASSERT_EQ(prepare(c).error, "");
  daemon_.down = true;
  EXPECT_NE(driver_->unprepare({c})[c.uid].find("Connection refused"), std::string::npos);
  EXPECT_EQ(driver_->entries().at(c.uid).state, CheckpointEntry::State::kUnpreparing);
  EXPECT_EQ(daemon_.views.size(), 1u);
  daemon_.down = false;
  start();
  EXPECT_EQ(driver_->recover(), 0u);
  EXPECT_TRUE(daemon_.views.empty()) << "recover removed the view";
  EXPECT_TRUE(driver_->entries().empty());
}

// A view whose CDI spec the runtime cannot find is no answer: undone, and
// the error says where the agent looked.
TEST_F(DriverTest, AViewWithoutItsCdiSpecIsUndone) {
  const std::string cdi = dir_ + "/cdi";
  ASSERT_EQ(::mkdir(cdi.c_str(), 0755), 0);
  std::string error;
  auto cp = Checkpoint::load(path(), &error);
  ASSERT_TRUE(cp) << error;
  Driver d("node-a", daemon_, claims_, std::move(*cp), cdi);
  const ClaimRef c = add_claim(ClaimSpec{});
  auto r = d.prepare({c})[c.uid];
  EXPECT_NE(r.error.find("wrote no CDI spec for view " + view_name_for(c.uid) + " in " + cdi),
            std::string::npos)
      << r.error;
  EXPECT_TRUE(daemon_.views.empty()) << "the view was removed again";
  EXPECT_TRUE(d.entries().empty());
  // Control: with the spec where the host daemon writes it, the claim prepares.
  std::ofstream(cdi + "/pcifs.io-view_" + view_name_for(c.uid) + ".json") << "{}";
  EXPECT_EQ(d.prepare({c})[c.uid].error, "");
}

TEST_F(DriverTest, ACorruptCheckpointIsAnErrorNotAFreshStart) {
  { std::ofstream(path()) << "{\"version\": 1, \"claims\": {\"x\": {\"state\": \"maybe\"}}}"; }
  std::string error;
  EXPECT_FALSE(Checkpoint::load(path(), &error));
  EXPECT_NE(error.find("claim x: malformed"), std::string::npos) << error;
  { std::ofstream(path()) << "not json"; }
  EXPECT_FALSE(Checkpoint::load(path(), &error));
  unlink(path().c_str());
  EXPECT_TRUE(Checkpoint::load(path(), &error)) << "absent: empty";
}

TEST_F(DriverTest, APIServerErrorsAreReportedAndTheDriverKeepsServing) {
  ClaimSpec missing;
  missing.name = "ghost";
  auto r = prepare(ClaimRef{missing.ns, missing.uid, missing.name});
  EXPECT_NE(r.error.find("cannot read claim default/ghost"), std::string::npos) << r.error;
  const ClaimRef c = add_claim(ClaimSpec{});
  EXPECT_EQ(prepare(c).error, "");
}

}  // namespace
}  // namespace pcifs::kube
