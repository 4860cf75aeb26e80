// Fuzzes a control connection end to end, without a listening socket: the
// input is what a client sends on one connection (a socketpair stands in for
// the accepted socket), served by control::serve_connection, the very loop
// the Server runs per connection, with a handler that parses `add` views
// with core::parse_view as the daemon does (fs/fuse/view_host.cpp). The
// client sends everything, closes its side for writing and reads every answer
// to EOF. Each answer must be one JSON object line with "ok"; the session
// must end by itself (EOF), never by the idle timeout.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>

#include "control/protocol.hpp"
#include "control/server.hpp"
#include "control/session.hpp"
#include "control/unix_socket.hpp"
#include "control/watch_queue.hpp"
#include "core/view_policy.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::control;
using nlohmann::json;

class FuzzHandler : public Handler {
 public:
  json add(const json& view, const std::string& source) override {
    std::string error;
    auto v = core::parse_view(view.dump(), source, &error);
    if (!v) return json{{"ok", false}, {"error", error}};
    return json{{"ok", true}, {"view", {{"name", v->name}, {"mountpoint", v->mountpoint}}}};
  }
  json rm(const std::string& name) override {
    if (name == "throw") throw std::runtime_error("handler threw");
    return json{{"ok", true}, {"note", "no view named " + name + ": nothing to do"}};
  }
  json ls() override { return json{{"ok", true}, {"views", json::array()}}; }
  json devices() override { return json::array(); }  // not an object: an internal error
};

// Sends `in`, shuts down writing, reads to EOF.
void client(int fd, std::string_view in, std::string* out) {
  if (!send_blocking(fd, in).ok()) {
    // The server closed first (an overflow): what it said is still readable.
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
}

void check_answers(const std::string& out) {
  size_t start = 0;
  while (start < out.size()) {
    const size_t nl = out.find('\n', start);
    if (nl == std::string::npos) fuzz::fail("an answer without its newline");
    const json j = json::parse(out.substr(start, nl - start), nullptr, false);
    if (!j.is_object() || !j.contains("ok") || !j["ok"].is_boolean()) {
      fuzz::fail("an answer that is not {\"ok\":...}: " + out.substr(start, nl - start));
    }
    if (j.contains("error") && j["error"].is_string() &&
        j["error"].get<std::string>().starts_with("no complete request")) {
      fuzz::fail("the session waited for its idle timeout");
    }
    start = nl + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet_logs();
  static FuzzHandler handler;
  static WatcherHub hub;
  static ServerOptions options = [] {
    ServerOptions o;
    o.idle_timeout = std::chrono::milliseconds(10000);  // a hang guard only
    o.version = "fuzz";
    return o;
  }();
  static auto stop = WakeFd::create();  // never signalled
  if (!stop) fuzz::fail("eventfd");

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fuzz::fail("socketpair");
  UniqueFd server(sv[0]), client_fd(sv[1]);
  if (::fcntl(server.get(), F_SETFL, O_NONBLOCK) != 0) fuzz::fail("fcntl");
  std::string answers;
  std::thread t(client, client_fd.get(), fuzz::as_text(data, size), &answers);
  SessionEnv env{&options, &handler, &hub, stop->fd()};
  serve_connection(std::move(server), env);
  t.join();
  check_answers(answers);
  return 0;
}
