#include "select/open_backend.hpp"

#include <utility>

#include "sim/sim_backend.hpp"
#include "sysfs/sysfs_backend.hpp"

namespace pcifs::backend {

namespace {

constexpr std::string_view kExpected = "expected sim, sim:FILE.json, sysfs or sysfs:DIR";

Errno fail(std::string* error, std::string message, int err = EINVAL) {
  if (error) *error = std::move(message);
  return Errno(err);
}

Result<std::shared_ptr<Backend>> open_sim_file(const std::string& path, std::string* error) {
  std::string why;
  auto r = sim::load_backend_file(path, &why);
  if (!r) {
    // The loader names the field; make sure the message names the file too.
    if (why.find(path) == std::string::npos) why = path + ": " + why;
    return fail(error, "--backend=sim:" + path + ": " + why, r.error().value());
  }
  return std::shared_ptr<Backend>(std::move(*r));
}

Result<std::shared_ptr<Backend>> open_sysfs(const std::string& root, std::string* error) {
  auto r = sysfs::SysfsBackend::open(root);
  if (!r)
    return fail(error,
                "--backend=sysfs:" + root + ": expected a sysfs-shaped directory with a " +
                    "devices/ subdirectory, but " + root + "/devices is not a directory (" +
                    std::string(r.error().name()) + ")",
                r.error().value());
  return std::shared_ptr<Backend>(std::move(*r));
}

}  // namespace

Result<std::shared_ptr<Backend>> open_backend(std::string_view spec, std::string* error) {
  auto colon = spec.find(':');
  std::string_view kind = spec.substr(0, colon);
  bool has_arg = colon != std::string_view::npos;
  std::string arg(has_arg ? spec.substr(colon + 1) : std::string_view{});
  if (kind == "sim" && !has_arg) return std::shared_ptr<Backend>(sim::make_default_backend());
  if (kind == "sysfs" && !has_arg) return open_sysfs(std::string(kSysfsRoot), error);
  if ((kind == "sim" || kind == "sysfs") && arg.empty())
    return fail(error, "--backend=" + std::string(spec) + ": expected a " +
                           (kind == "sim" ? "file name" : "directory") + " after '" +
                           std::string(kind) + ":'");
  if (kind == "sim") return open_sim_file(arg, error);
  if (kind == "sysfs") return open_sysfs(arg, error);
  return fail(error, "--backend=" + std::string(spec) + ": " + std::string(kExpected));
}

}  // namespace pcifs::backend
