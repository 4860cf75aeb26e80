#include "control/session.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "control/protocol.hpp"
#include "core/log_limit.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::control {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = size_t{64} << 10;
constexpr size_t kWatchChunk = size_t{256} << 10;  // bytes of events gathered per send

json error_object(const std::string& text) { return json{{"ok", false}, {"error", text}}; }

// The daemon's lock contention since it started (include/pcifs/sync.hpp):
// every named lock that ever waited, the longest waits first.
json locks_object() {
  std::vector<LockContention> sites = lock_contention();
  std::sort(sites.begin(), sites.end(),
            [](const LockContention& a, const LockContention& b) { return a.wait_ns > b.wait_ns; });
  json list = json::array();
  for (const LockContention& s : sites) {
    list.push_back(json{{"name", s.name}, {"contended", s.contended}, {"wait_ns", s.wait_ns}});
  }
  return json{{"ok", true}, {"counted", kLockContentionCounted}, {"locks", std::move(list)}};
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
}

class Session {
 public:
  Session(UniqueFd fd, const SessionEnv& env)
      : fd_(std::move(fd)), env_(env), opts_(*env.options), buf_(kReadChunk) {}
  void run();

 private:
  enum class Wait { kReadable, kTimeout, kStop };

  Wait wait_readable(Clock::time_point deadline);
  bool read_some();
  bool reply(const std::string& line);
  json answer(const std::string& line, bool* watch);
  json call_handler(const Request& r);
  void watch();
  void pump_events(Watcher& w);

  UniqueFd fd_;
  const SessionEnv& env_;
  const ServerOptions& opts_;
  LineReader reader_;
  std::vector<char> buf_;
};

void Session::run() {
  auto deadline = Clock::now() + opts_.idle_timeout;
  std::string line;
  for (;;) {
    const auto next = reader_.next(&line);
    if (next == LineReader::Next::kOverflow) {
      reply(error_line(overflow_error_text()));
      return;
    }
    if (next == LineReader::Next::kLine) {
      if (line.empty()) continue;  // a stray "\n" is not a request
      bool watching = false;
      const json response = answer(line, &watching);
      if (watching) return watch();
      if (!reply(to_line(response))) return;
      deadline = Clock::now() + opts_.idle_timeout;
      continue;
    }
    switch (wait_readable(deadline)) {
      case Wait::kStop: return;
      case Wait::kTimeout:
        reply(error_line("no complete request in " + std::to_string(opts_.idle_timeout.count()) +
                         " ms: closing"));
        return;
      case Wait::kReadable:
        if (!read_some()) return;  // EOF (mid-line or not) or an error: just close
    }
  }
}

Session::Wait Session::wait_readable(Clock::time_point deadline) {
  for (;;) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {env_.stop_fd, POLLIN, 0}};
    const int rc = ::poll(fds, 2, poll_ms(deadline));
    if (rc < 0 && errno != EINTR) return Wait::kStop;
    if (fds[1].revents != 0) return Wait::kStop;
    if (fds[0].revents != 0) return Wait::kReadable;  // data, EOF or an error: recv() tells
    if (Clock::now() >= deadline) return Wait::kTimeout;
  }
}

bool Session::read_some() {
  const ssize_t n = ::recv(fd_.get(), buf_.data(), buf_.size(), 0);
  if (n > 0) {
    reader_.feed(std::string_view(buf_.data(), static_cast<size_t>(n)));
    return true;
  }
  return n < 0 && (errno == EAGAIN || errno == EINTR);
}

// A client that does not read its answer within idle_timeout is dropped.
bool Session::reply(const std::string& line) {
  return send_all(fd_.get(), line, env_.stop_fd, Clock::now() + opts_.idle_timeout).ok();
}

json Session::answer(const std::string& line, bool* watch) {
  std::string error;
  auto req = parse_request(line, &error);
  if (!req) return error_object(error);
  if (req->verb == "ping") {
    return json{
        {"ok", true}, {"pid", static_cast<int64_t>(::getpid())}, {"version", opts_.version}};
  }
  if (req->verb == "locks") return locks_object();
  if (req->verb == "watch") {
    *watch = true;
    return json{{"ok", true}, {"watching", true}};
  }
  return call_handler(*req);
}

json Session::call_handler(const Request& r) {
  std::string what;
  try {
    json response;
    if (r.verb == "add") {
      response = env_.handler->add(r.body.at("view"), r.body.at("source").get<std::string>());
    } else if (r.verb == "rm") {
      response = env_.handler->rm(r.body.at("name").get<std::string>());
    } else if (r.verb == "devices") {
      response = env_.handler->devices();
    } else {
      response = env_.handler->ls();
    }
    if (response.is_object()) return response;
    what = std::string("the handler answered a ") + response.type_name();
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "unknown exception";
  }
  PCIFS_LOG_LIMITED(error, "control:internal", "control: {} failed: {}", r.verb, what);
  return error_object("internal error: " + what);
}

// Registered before the ok line is written, so that a client that has read
// {"ok":true,"watching":true} gets every event published after it.
void Session::watch() {
  auto wake = WakeFd::create();
  if (!wake) {
    reply(error_line("internal error: eventfd: " + std::string(wake.error().name())));
    return;
  }
  auto w = std::make_shared<Watcher>(opts_.watch_queue, std::move(*wake));
  env_.hub->add(w);
  pump_events(*w);
  env_.hub->remove(w.get());
}

// Writes the ok line, then events, without ever blocking in send(): a full
// socket only stops us asking the queue for more, so the queue fills and
// drops. Returns when the peer goes away or the server stops.
void Session::pump_events(Watcher& w) {
  std::string out = to_line(json{{"ok", true}, {"watching", true}});
  size_t sent = 0;
  for (;;) {
    if (sent == out.size()) {
      out.clear();
      sent = 0;
      w.wake.drain();  // before take(): a push after take() signals again
      w.queue.take(&out, kWatchChunk);
    }
    const bool pending = sent < out.size();
    pollfd fds[3] = {{fd_.get(), static_cast<int16_t>(POLLRDHUP | (pending ? POLLOUT : 0)), 0},
                     {env_.stop_fd, POLLIN, 0},
                     {pending ? -1 : w.wake.fd(), POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) != 0) return;
    if ((fds[0].revents & POLLOUT) == 0) continue;
    const ssize_t n =
        ::send(fd_.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return;
    }
  }
}

}  // namespace

void serve_connection(UniqueFd fd, const SessionEnv& env) { Session(std::move(fd), env).run(); }

}  // namespace pcifs::control
