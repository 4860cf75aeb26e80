// The agent's checkpoint: what it has prepared, so that a restarted agent
// answers the kubelet's repeated Prepare from it and can finish an Unprepare
// it started. One JSON file, replaced atomically (write a temporary, fsync,
// rename: control::write_atomically) at every change; small (one entry per
// claim).
//
// An entry is written "preparing" BEFORE the view is added and "prepared"
// after, and marked "unpreparing" before the view is removed and dropped
// after: whatever step a crash interrupts, the entry says what may exist.
// Views are added and removed idempotently, so redoing a step is safe.
//
// Thread safety: none; the driver serialises calls (driver.hpp).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kube/dra_handler.hpp"
#include "pcifs/result.hpp"

namespace pcifs::kube {

struct CheckpointEntry {
  enum class State { kPreparing, kPrepared, kUnpreparing };
  State state = State::kPreparing;
  std::string ns, name;                 // the claim's
  std::string view;                     // the runtime view's name
  std::vector<PreparedDevice> devices;  // filled once prepared (cdi ids included)
};

class Checkpoint {
 public:
  // Loads PATH (absent: empty). A file that cannot be parsed is an error: the
  // agent refuses to start rather than forget what it prepared.
  static Result<Checkpoint> load(const std::string& path, std::string* error);

  const std::map<std::string, CheckpointEntry>& entries() const { return entries_; }
  const CheckpointEntry* find(const std::string& uid) const;
  // Sets or drops an entry and writes the file; on a write error the
  // in-memory state is left as it was.
  Result<void> put(const std::string& uid, const CheckpointEntry& e, std::string* error);
  Result<void> erase(const std::string& uid, std::string* error);

  const std::string& path() const { return path_; }

 private:
  Result<void> save(const std::map<std::string, CheckpointEntry>& entries,
                    std::string* error) const;
  std::string path_;
  std::map<std::string, CheckpointEntry> entries_;
};

}  // namespace pcifs::kube
