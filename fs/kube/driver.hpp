// The DRA driver's logic: a prepared claim is a pcifs runtime view [S16].
//
// Prepare (one kubelet call = the claims of one pod for pcifs.io):
//   - a pod gets one view (a container has one /sys/bus/pci): a call with
//     more than one pcifs.io claim is refused, every claim with the same
//     sentence saying to put the pod's devices in one claim;
//   - a claim already prepared (checkpoint) is answered from the checkpoint;
//   - else the claim is read from the API server and checked (claim.hpp), its
//     devices looked up in the host daemon's inventory (inventory.hpp: a
//     device that no longer exists or is unhealthy is refused), and the view
//     "k8s-<claim uid>" added through the control socket with exactly the
//     allocated functions and the claim's policy; its CDI device ID is the
//     answer for every device of the claim.
// Unprepare: the view is removed (a claim the checkpoint does not know is
// removed by its name too: idempotent, and safe when a checkpoint was lost).
// Both are idempotent; every step is checkpointed (checkpoint.hpp) and
// recover() finishes an unprepare a previous agent started.
//
// Thread safety: prepare/unprepare/recover are serialised by one mutex (the
// kubelet calls rarely; each call is a few socket round trips).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "kube/checkpoint.hpp"
#include "kube/dra_handler.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::kube {

// The host daemon, as the agent reaches it: one request, one answer.
class HostDaemon {
 public:
  virtual ~HostDaemon() = default;
  // The daemon's answer ({"ok":...}); an error only when none came.
  virtual Result<nlohmann::json> call(const nlohmann::json& request, std::string* error) = 0;
};

// Over the control socket at `path`: a connection per call, so a restarted
// daemon is simply reached again.
class ControlSocketDaemon : public HostDaemon {
 public:
  explicit ControlSocketDaemon(std::string path) : path_(std::move(path)) {}
  Result<nlohmann::json> call(const nlohmann::json& request, std::string* error) override;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Where claims are read (the API server: api_client.hpp).
class ClaimReader {
 public:
  virtual ~ClaimReader() = default;
  virtual Result<nlohmann::json> get_claim(const std::string& ns, const std::string& name,
                                           std::string* error) = 0;
};

class Driver : public DraHandler {
 public:
  // `cdi_dir`: where the host daemon writes its CDI specs (the runtime reads
  // them there); a prepared view must have its spec there, or the container
  // could not get it. Empty: not checked.
  Driver(std::string node, HostDaemon& daemon, ClaimReader& claims, Checkpoint checkpoint,
         std::string cdi_dir = "");

  std::map<std::string, PrepareResult> prepare(const std::vector<ClaimRef>& claims) override;
  std::map<std::string, std::string> unprepare(const std::vector<ClaimRef>& claims) override;

  // At start: finishes the unprepares a previous agent began (their views are
  // removed, their entries dropped). Entries still "preparing" stay: the
  // kubelet's next Prepare or Unprepare of that claim settles them. Returns
  // how many entries remain unsettled (logged).
  size_t recover();

  // A copy of the checkpoint's entries (tests, status).
  std::map<std::string, CheckpointEntry> entries() const;

 private:
  PrepareResult prepare_one(const ClaimRef& c) REQUIRES(mu_);
  std::string unprepare_one(const ClaimRef& c) REQUIRES(mu_);
  Result<void> remove_view(const std::string& view, std::string* error) REQUIRES(mu_);

  const std::string node_;
  const std::string cdi_dir_;
  HostDaemon& daemon_;
  ClaimReader& claims_;
  mutable Mutex mu_{"Driver::mu_"};
  Checkpoint checkpoint_ GUARDED_BY(mu_);
};

}  // namespace pcifs::kube
