// Helpers for the control socket tests: a temporary directory, a fake
// Handler that records its calls, a raw client socket that reads lines with a
// generous deadline, and a bounded wait on a condition. No sleeps as
// synchronisation: every wait here ends when its condition holds.
#pragma once

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "control/protocol.hpp"
#include "control/server.hpp"
#include "control/unix_socket.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::control::test {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Long enough for a loaded 2-core machine under TSan; only a failing test waits it out.
inline constexpr auto kDeadline = seconds(60);

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pcifs-control-XXXXXX";
    path_ = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Records calls; answers from settable values; may throw.
class FakeHandler : public Handler {
 public:
  json add(const json& view, const std::string& source) override {
    MutexLock lock(mu_);
    calls_.push_back("add " + source + " " + view.dump());
    if (throw_) throw std::runtime_error("boom");
    return add_answer_;
  }
  json rm(const std::string& name) override {
    MutexLock lock(mu_);
    calls_.push_back("rm " + name);
    if (throw_) throw std::runtime_error("boom");
    return rm_answer_;
  }
  json ls() override {
    MutexLock lock(mu_);
    calls_.push_back("ls");
    if (throw_) throw std::runtime_error("boom");
    return ls_answer_;
  }
  std::vector<std::string> calls() const {
    MutexLock lock(mu_);
    return calls_;
  }
  void set_throw(bool t) {
    MutexLock lock(mu_);
    throw_ = t;
  }
  void set_add(json j) {
    MutexLock lock(mu_);
    add_answer_ = std::move(j);
  }
  void set_rm(json j) {
    MutexLock lock(mu_);
    rm_answer_ = std::move(j);
  }
  void set_ls(json j) {
    MutexLock lock(mu_);
    ls_answer_ = std::move(j);
  }

 private:
  mutable Mutex mu_;
  std::vector<std::string> calls_ GUARDED_BY(mu_);
  bool throw_ GUARDED_BY(mu_) = false;
  json add_answer_ GUARDED_BY(mu_) = {
      {"ok", true},
      {"view",
       {{"name", "c1"}, {"mountpoint", "/run/pcifs/c1"}, {"cdi_device", "pcifs.io/view=c1"}}}};
  json rm_answer_ GUARDED_BY(mu_) = {{"ok", true}};
  json ls_answer_ GUARDED_BY(mu_) = {{"ok", true}, {"views", json::array()}};
};

// A raw blocking client socket. read_line() waits at most kDeadline.
class RawConn {
 public:
  explicit RawConn(const std::string& path) {
    auto fd = connect_unix(path);
    if (fd) fd_ = std::move(*fd);
  }
  bool ok() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }

  bool send(std::string_view data) { return send_blocking(fd_.get(), data).ok(); }
  bool send_json(const json& j) { return send(to_line(j)); }

  // The next line; nullopt at EOF, on an error or at the deadline.
  std::optional<std::string> read_line() {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    std::string line;
    char buf[65536];
    for (;;) {
      if (reader_.next(&line) == LineReader::Next::kLine) return line;
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  json read_json() {
    auto line = read_line();
    if (!line) return json{{"eof", true}};
    return json::parse(*line);
  }
  json request(const json& req) {
    if (!send_json(req)) return json{{"send_failed", true}};
    return read_json();
  }
  // True when the server closed the connection (EOF or reset) before the deadline,
  // skipping any lines still queued.
  bool wait_closed() {
    while (read_line()) {
    }
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;  // EOF/reset: readable with nothing left
  }

 private:
  UniqueFd fd_;
  LineReader reader_{kMaxResponseLine};
};

inline bool eventually(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));  // polling a condition, not a delay
  }
  return true;
}

// No idle timeout a loaded machine could reach: the tests that want one set it.
inline ServerOptions test_options() {
  ServerOptions o;
  o.idle_timeout = std::chrono::hours(1);
  return o;
}

inline std::unique_ptr<Server> start_server(const std::string& path, Handler& h,
                                            ServerOptions o = test_options()) {
  o.path = path;
  o.allowed_uid = ::geteuid();
  if (o.version.empty()) o.version = "test";
  std::string error;
  auto s = Server::start(o, h, &error);
  if (!s) throw std::runtime_error("Server::start: " + error);
  return s;
}

}  // namespace pcifs::control::test
