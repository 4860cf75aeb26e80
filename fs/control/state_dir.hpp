// The state directory of runtime views [S16]: one JSON file per view,
// DIR/NAME.json, holding the view object as added (with its name and
// mountpoint filled in), so that a daemon that starts again mounts the same
// views. Every write is a temp file in DIR, fsync'd, renamed over the target:
// a crash leaves the old file or the new one, never a torn one; stray temp
// files of a crashed writer are ignored and cleaned up by list_state().
//
// Plain functions over the file system; thread-safe as the file system is
// (the caller serialises writes of one name).
#pragma once

#include <string>
#include <vector>

#include "pcifs/result.hpp"

namespace pcifs::control {

// Writes `text` to `dir/name.json` atomically, creating `dir` (0700: the
// views' policies are root's business) if missing.
Result<void> save_state(const std::string& dir, const std::string& name, const std::string& text,
                        std::string* error);
// Removes `dir/name.json`; absent is fine.
void remove_state(const std::string& dir, const std::string& name);

struct StateFile {
  std::string path;
  std::string text;
};
// Every `*.json` of `dir`, sorted by name (a missing dir is empty). Removes
// temp files left by a crashed writer.
std::vector<StateFile> list_state(const std::string& dir);

// Writes `text` to `path` through a temp file in the same directory + fsync
// + rename, with `mode`. The one atomic-replace helper of the control room.
Result<void> write_atomically(const std::string& path, const std::string& text, unsigned mode,
                              std::string* error);

}  // namespace pcifs::control
