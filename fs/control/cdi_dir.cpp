// The CDI directory (cdi_dir.hpp).
#include "control/cdi_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/state_dir.hpp"

namespace pcifs::control {
namespace {

// mkdir -p with `mode` for what it creates; what exists is left as it is.
Result<void> make_dirs(const std::string& dir, mode_t mode, std::string* error) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      const int err = errno;
      if (error) *error = "cannot create " + part + ": " + std::strerror(err);
      return Errno(err);
    }
  }
  return Ok();
}

}  // namespace

std::string view_spec_path(const std::string& dir, const std::string& view_name) {
  // "pcifs.io/view" with its '/' made '_', as the CDI tools name spec files
  // (vendor.com-class_device.json): one file per device.
  std::string kind(core::kCdiKind);
  kind.replace(kind.find('/'), 1, "-");
  return dir + "/" + kind + "_" + core::cdi_device_name(view_name) + ".json";
}

Result<void> write_view_spec(const std::string& dir, const ViewPolicy& v,
                             const core::CdiOptions& options, std::string* error) {
  auto spec = core::cdi_spec({v}, options, error);
  if (!spec) return spec.error();
  if (auto made = make_dirs(dir, 0755, error); !made) return made;
  // write_atomically's temp file is PATH.tmp.PID: not *.json, so an engine
  // scanning DIR skips it, and it is unlinked on every failure.
  return write_atomically(view_spec_path(dir, v.name), spec->dump(2) + "\n", 0644, error);
}

void remove_view_spec(const std::string& dir, const std::string& view_name) {
  ::unlink(view_spec_path(dir, view_name).c_str());
}

}  // namespace pcifs::control
