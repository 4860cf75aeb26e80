// The daemon's CDI directory [S16]: one CDI spec per view, so that a
// container engine can attach every view the daemon serves, including views
// added at runtime, by name (`--device pcifs.io/view=NAME`). The spec of view
// NAME is DIR/pcifs.io-view_NAME.json (NAME = core::cdi_device_name, so the
// file name is the CDI device name), built by core::cdi_spec from that one
// view: the same builder as `pcifs cdi`. Engines (podman, containerd, CRI-O)
// read /etc/cdi and /var/run/cdi; /var/run/cdi suits a daemon's specs, which
// describe mounts that vanish with it.
//
// Writes are atomic: the spec goes to a temp file in DIR (a name that does
// not end in .json, which engines skip), fsync'd, renamed over the target,
// so an engine scanning DIR sees the old spec or the new one, never a torn
// one. Plain functions over the file system; thread-safe as the file system
// is, except that the caller serialises writes of one view's spec.
#pragma once

#include <string>

#include "core/cdi_spec.hpp"
#include "pcifs/result.hpp"
#include "pcifs/view.hpp"

namespace pcifs::control {

// DIR/pcifs.io-view_NAME.json, NAME = core::cdi_device_name(view_name).
std::string view_spec_path(const std::string& dir, const std::string& view_name);

// Writes the spec of `v` (which must name its mountpoint) to
// view_spec_path(dir, v.name), mode 0644, creating `dir` (0755) and its
// parents if missing. On failure *error says why: the view's spec error
// (core::cdi_spec), or the path and the errno text.
Result<void> write_view_spec(const std::string& dir, const ViewPolicy& v,
                             const core::CdiOptions& options, std::string* error);

// Removes the spec of `view_name`; absent is fine.
void remove_view_spec(const std::string& dir, const std::string& view_name);

}  // namespace pcifs::control
