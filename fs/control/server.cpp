#include "control/server.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <system_error>

#include "control/protocol.hpp"
#include "control/session.hpp"
#include "control/watch_queue.hpp"
#include "core/log_limit.hpp"

namespace pcifs::control {

namespace {

// Used for answers given by the acceptor itself: one short line into an
// empty socket buffer, so one non-blocking send is enough.
void refuse(int fd, const std::string& text) {
  const std::string line = error_line(text);
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) return;
}

bool out_of_resources(int e) { return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM; }

}  // namespace

std::unique_ptr<Server> Server::start(const ServerOptions& options, Handler& handler,
                                      std::string* error) {
  auto fd = listen_unix(options.path, error);
  if (!fd) return nullptr;
  auto stop = WakeFd::create();
  auto reap = WakeFd::create();
  if (!stop || !reap) {
    *error = options.path + ": eventfd: " + std::string((stop ? reap : stop).error().name());
    ::unlink(options.path.c_str());
    return nullptr;
  }
  std::unique_ptr<Server> s(
      new Server(options, handler, std::move(*fd), std::move(*stop), std::move(*reap)));
  try {
    s->acceptor_ = std::thread(&Server::accept_loop, s.get());
  } catch (const std::system_error& e) {
    *error = options.path + ": cannot start the acceptor thread: " + e.what();
    return nullptr;  // ~Server unlinks the socket
  }
  spdlog::info("control: listening on {} (uid {})", options.path, options.allowed_uid);
  return s;
}

Server::Server(const ServerOptions& options, Handler& handler, UniqueFd listen_fd, WakeFd stop,
               WakeFd reap)
    : options_(options),
      handler_(handler),
      listen_fd_(std::move(listen_fd)),
      stop_(std::move(stop)),
      reap_(std::move(reap)),
      hub_(std::make_unique<WatcherHub>()) {
  remember_inode();
}

Server::~Server() {
  stop_.signal();
  if (acceptor_.joinable()) acceptor_.join();
  std::list<Conn> all;
  {
    MutexLock lock(mu_);
    all.swap(conns_);  // list nodes keep their addresses: threads still hold Conn*
  }
  for (Conn& c : all) {
    if (c.thread.joinable()) c.thread.join();
  }
  // Only our own socket: a file put there since (by hand) is not ours.
  struct stat st {};
  if (::lstat(options_.path.c_str(), &st) == 0 && st.st_dev == sock_dev_ &&
      st.st_ino == sock_ino_) {
    ::unlink(options_.path.c_str());
  }
}

void Server::remember_inode() {
  struct stat st {};
  if (::lstat(options_.path.c_str(), &st) == 0) {
    sock_dev_ = st.st_dev;
    sock_ino_ = st.st_ino;
  }
}

void Server::publish(const nlohmann::json& event) { hub_->publish(event); }

size_t Server::watchers() const { return hub_->size(); }

size_t Server::connections() const {
  MutexLock lock(mu_);
  return live_;
}

bool Server::wait_for_watchers(size_t n, std::chrono::milliseconds timeout) const {
  return hub_->wait_for_size(n, timeout);
}

bool Server::wait_for_connections(size_t n, std::chrono::milliseconds timeout) const {
  MutexLock lock(mu_);
  return conns_changed_.wait_for(mu_, timeout, [&]() REQUIRES(mu_) { return live_ == n; });
}

void Server::accept_loop() {
  for (;;) {
    pollfd fds[3] = {
        {listen_fd_.get(), POLLIN, 0}, {stop_.fd(), POLLIN, 0}, {reap_.fd(), POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno != EINTR) back_off("poll", errno);  // ENOMEM: try again, never stop serving
      continue;
    }
    if (fds[1].revents != 0) return;
    if (fds[2].revents != 0) {
      reap_.drain();
      reap();
    }
    if (fds[0].revents != 0) accept_one();
  }
}

void Server::back_off(const char* what, int e) const {
  PCIFS_LOG_LIMITED(warn, "control:accept", "control: {}: {}", what, Errno(e).name());
  pollfd stop{stop_.fd(), POLLIN, 0};
  if (::poll(&stop, 1, 100) < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

void Server::accept_one() {
  const int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    if (e == EAGAIN || e == EINTR || e == ECONNABORTED) return;
    if (out_of_resources(e)) {
      // The pending connection keeps the socket readable: back off instead
      // of spinning.
      back_off("accept", e);
    } else {
      PCIFS_LOG_LIMITED(warn, "control:accept", "control: accept: {}", Errno(e).name());
    }
    return;
  }
  UniqueFd conn(fd);
  if (admit(conn.get())) spawn(std::move(conn));
}

// Answers and drops (when false) a peer of another uid, or one too many.
bool Server::admit(int fd) {
  const auto cred = peer_cred(fd);
  if (!cred || cred->uid != options_.allowed_uid) {
    const long uid = cred ? static_cast<long>(cred->uid) : -1;
    const long pid = cred ? static_cast<long>(cred->pid) : -1;
    PCIFS_LOG_LIMITED(warn, "control:refused",
                      "control: refused a connection from uid {} (pid {}): {} is for uid {}", uid,
                      pid, options_.path, options_.allowed_uid);
    refuse(fd, "permission denied: the control socket is for uid " +
                   std::to_string(options_.allowed_uid) + " (peer uid " + std::to_string(uid) +
                   ")");
    return false;
  }
  reap();
  MutexLock lock(mu_);
  if (live_ >= options_.max_connections) {
    PCIFS_LOG_LIMITED(warn, "control:busy", "control: refused a connection: {} already open",
                      live_);
    refuse(fd, "too many control connections (at most " + std::to_string(options_.max_connections) +
                   ")");
    return false;
  }
  return true;
}

void Server::spawn(UniqueFd fd) {
  MutexLock lock(mu_);
  conns_.emplace_back();
  Conn* c = &conns_.back();
  try {
    // Under mu_: the thread cannot mark itself done before it is stored.
    c->thread = std::thread(&Server::connection_main, this, c, std::move(fd));
    ++live_;
    conns_changed_.notify_all();
  } catch (const std::system_error& e) {
    conns_.pop_back();  // the descriptor went with the failed thread's arguments
    PCIFS_LOG_LIMITED(error, "control:thread", "control: cannot start a thread: {}", e.what());
  }
}

void Server::connection_main(Conn* c, UniqueFd fd) {
  try {
    serve_connection(std::move(fd), SessionEnv{&options_, &handler_, hub_.get(), stop_.fd()});
  } catch (const std::exception& e) {
    PCIFS_LOG_LIMITED(error, "control:internal", "control: connection failed: {}", e.what());
  } catch (...) {
    PCIFS_LOG_LIMITED(error, "control:internal", "control: connection failed");
  }
  {
    MutexLock lock(mu_);
    c->done = true;
    --live_;
    conns_changed_.notify_all();
  }
  reap_.signal();
}

void Server::reap() {
  std::list<Conn> finished;
  {
    MutexLock lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      auto cur = it++;
      if (cur->done) finished.splice(finished.end(), conns_, cur);
    }
  }
  for (Conn& c : finished) c.thread.join();
}

}  // namespace pcifs::control
