// Errno and Result<T>: how every layer below FUSE reports failure.
//
// Errno is a strong type around a positive errno value, so an error can never be
// confused with a count or an offset. Result<T> holds either a T or an Errno
// (GCC 12 has no std::expected in C++20). Both are plain values: no ownership,
// no locking, safe to copy between threads.
#pragma once

#include <cassert>
#include <cerrno>
#include <string_view>
#include <utility>
#include <variant>

namespace pcifs {

class Errno {
 public:
  constexpr explicit Errno(int value) : value_(value) { assert(value > 0); }
  constexpr int value() const { return value_; }
  // Symbolic name ("EIO"), for logs, status and test failure messages.
  std::string_view name() const;
  friend constexpr bool operator==(Errno a, Errno b) { return a.value_ == b.value_; }

 private:
  int value_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  Result(Errno e) : v_(std::in_place_index<1>, e) {}                 // NOLINT(implicit)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Errno error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  T value_or(T fallback) const { return ok() ? std::get<0>(v_) : fallback; }

 private:
  std::variant<T, Errno> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Errno e) : err_(e.value()) {}  // NOLINT(implicit)
  bool ok() const { return err_ == 0; }
  explicit operator bool() const { return ok(); }
  Errno error() const {
    assert(!ok());
    return Errno(err_);
  }

 private:
  int err_ = 0;
};

inline Result<void> Ok() { return {}; }

inline std::string_view Errno::name() const {
  switch (value_) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    case ESHUTDOWN: return "ESHUTDOWN";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOBUFS: return "ENOBUFS";
    case EADDRINUSE: return "EADDRINUSE";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    default: return "E?";
  }
}

}  // namespace pcifs

// Propagates an error from an expression yielding Result<...>.
#define PCIFS_TRY(expr)                                  \
  do {                                                   \
    auto pcifs_try_r_ = (expr);                          \
    if (!pcifs_try_r_.ok()) return pcifs_try_r_.error(); \
  } while (0)

// Declares `var` from a Result-returning expression, or returns its error.
#define PCIFS_TRY_ASSIGN(var, expr)                    \
  auto var##_try_r_ = (expr);                          \
  if (!var##_try_r_.ok()) return var##_try_r_.error(); \
  auto var = std::move(var##_try_r_).value() /* NOLINT(bugprone-macro-parentheses): a name */
