// The daemon side of the control socket [S16]: a root-only unix socket on
// which `pcifs view add|rm|ls|watch` talk to one host daemon (protocol.hpp).
//
// Threads: one acceptor thread, plus one thread per connection (at most
// ServerOptions::max_connections; beyond that a client is answered with an
// error line and closed). Each connection serves its requests one line at a
// time and calls the Handler from its own thread, so Handler calls may run
// concurrently. A "watch" connection becomes a watcher: its thread writes the
// events given to publish(), through a bounded queue, so a watcher that does
// not read never blocks publish() or anybody else.
//
// Ownership: the Server owns the socket, every connection and every thread;
// the Handler is borrowed and must outlive the Server. ~Server stops
// accepting, wakes and closes every connection (also those blocked reading or
// writing), joins every thread (waiting for Handler calls in progress to
// return) and unlinks the socket. publish(), watchers() and connections() are
// thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "control/unix_socket.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::control {

class WatcherHub;

// Implemented by the daemon. Each call returns the whole response object
// ({"ok":true,...} or {"ok":false,"error":...}). An exception becomes
// {"ok":false,"error":"internal error: <what>"}; a non-object answer becomes
// an internal error too.
class Handler {
 public:
  virtual ~Handler() = default;
  virtual nlohmann::json add(const nlohmann::json& view, const std::string& source) = 0;
  virtual nlohmann::json rm(const std::string& name) = 0;
  virtual nlohmann::json ls() = 0;
  // The host's devices for an orchestrator (pcifs-kube): {"ok":true,
  // "devices":[...]} (host_control.cpp lists the fields). A handler that
  // keeps no inventory answers that it does not.
  virtual nlohmann::json devices() {
    return nlohmann::json{{"ok", false}, {"error", "devices: not served by this daemon"}};
  }
};

struct ServerOptions {
  std::string path;       // e.g. /run/pcifs/control.sock
  uid_t allowed_uid = 0;  // peers (SO_PEERCRED) with another uid are refused
  // A connection that sends no complete line in this time is closed (not a
  // watcher). Also the longest a response may wait for the client to read it.
  std::chrono::milliseconds idle_timeout{10000};
  unsigned max_connections = 64;  // watchers included
  size_t watch_queue = 1024;      // events buffered per slow watcher
  std::string version;            // answered to "ping"
};

class Server {
 public:
  // Creates the socket (see listen_unix) and starts the acceptor thread.
  // Null with *error set ("PATH: another pcifs daemon is listening").
  static std::unique_ptr<Server> start(const ServerOptions& options, Handler& handler,
                                       std::string* error);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Queues `event` (a JSON object with an "event" field) for every watcher.
  void publish(const nlohmann::json& event);
  size_t watchers() const;
  // Connections being served (watchers included).
  size_t connections() const EXCLUDES(mu_);

  // Wait until watchers()/connections() equals n, at most `timeout`; true
  // when it did. For readiness checks and tests.
  bool wait_for_watchers(size_t n, std::chrono::milliseconds timeout) const;
  bool wait_for_connections(size_t n, std::chrono::milliseconds timeout) const EXCLUDES(mu_);

  const std::string& path() const { return options_.path; }

 private:
  struct Conn {
    std::thread thread;
    bool done = false;  // guarded by Server::mu_
  };

  Server(const ServerOptions& options, Handler& handler, UniqueFd listen_fd, WakeFd stop,
         WakeFd reap);
  void accept_loop();
  void accept_one();
  void back_off(const char* what, int e) const;
  bool admit(int fd) EXCLUDES(mu_);
  void spawn(UniqueFd fd) EXCLUDES(mu_);
  void connection_main(Conn* conn, UniqueFd fd) EXCLUDES(mu_);
  void reap() EXCLUDES(mu_);
  void remember_inode();

  const ServerOptions options_;
  Handler& handler_;
  UniqueFd listen_fd_;
  const WakeFd stop_;  // signalled once, never drained: every poll() sees it
  const WakeFd reap_;  // a connection thread has finished
  std::unique_ptr<WatcherHub> hub_;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;

  mutable Mutex mu_{"Server::mu_"};  // lock order: leaf (fs/core/mediator_state.hpp)
  mutable CondVar conns_changed_;
  std::list<Conn> conns_ GUARDED_BY(mu_);
  size_t live_ GUARDED_BY(mu_) = 0;  // conns_ not done
  std::thread acceptor_;
};

}  // namespace pcifs::control
