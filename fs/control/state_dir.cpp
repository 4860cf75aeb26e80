// The state directory (state_dir.hpp).
#include "control/state_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace pcifs::control {
namespace {

constexpr const char* kTempMark = ".tmp.";

bool fail(std::string* error, const std::string& text, int err) {
  if (error) *error = text + ": " + std::strerror(err);
  return false;
}

bool make_dirs(const std::string& dir, mode_t mode, std::string* error) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return fail(error, "cannot create " + part, errno);
    }
  }
  return true;
}

bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<void> write_atomically(const std::string& path, const std::string& text, unsigned mode,
                              std::string* error) {
  const std::string tmp = path + kTempMark + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    fail(error, "cannot write " + tmp, errno);
    return Errno(errno);
  }
  const bool ok = write_all(fd, text) && ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = ok ? errno : err;
    ::unlink(tmp.c_str());
    fail(error, "cannot write " + path, e);
    return Errno(e ? e : EIO);
  }
  return Ok();
}

Result<void> save_state(const std::string& dir, const std::string& name, const std::string& text,
                        std::string* error) {
  if (!make_dirs(dir, 0700, error)) return Errno(EIO);
  return write_atomically(dir + "/" + name + ".json", text, 0600, error);
}

void remove_state(const std::string& dir, const std::string& name) {
  ::unlink((dir + "/" + name + ".json").c_str());
}

std::vector<StateFile> list_state(const std::string& dir) {
  std::vector<StateFile> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.find(kTempMark) != std::string::npos) {
      ::unlinkat(::dirfd(d), n.c_str(), 0);  // a writer crashed before its rename
    } else if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) {
      names.push_back(n);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string path = dir;
    path.append("/").append(n);
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back({std::move(path), ss.str()});
  }
  return out;
}

}  // namespace pcifs::control
