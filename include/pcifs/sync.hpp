// Annotated locking primitives, so clang's -Wthread-safety can check the
// locking rules written beside the data (GUARDED_BY, REQUIRES, ...).
// libstdc++'s std::mutex carries no annotations; these thin wrappers do.
// Mutex works with std::condition_variable_any (it has lock/unlock).
//
// Lock order: the daemon's whole order is written in fs/core/mediator_state.hpp
// ("Lock order"). ACQUIRED_BEFORE/ACQUIRED_AFTER state it where clang can see
// both locks (members of one class); clang checks them under
// -Wthread-safety-beta, which the clang builds turn on. Across objects, TSan's
// deadlock detector holds the order (tools/test.sh tsan,
// tests/unit/core/lock_order_test.cpp); a lock-like object that is not a
// mutex (a flag + condition variable) reports itself to it with LockOrderProbe.
#pragma once

#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PCIFS_TSAN 1
#endif
#endif
#if !defined(PCIFS_TSAN) && defined(__SANITIZE_THREAD__)
#define PCIFS_TSAN 1
#endif
#if defined(PCIFS_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#if defined(__clang__)
#define PCIFS_TSA(x) __attribute__((x))
#else
#define PCIFS_TSA(x)
#endif

#define CAPABILITY(x) PCIFS_TSA(capability(x))
#define SCOPED_CAPABILITY PCIFS_TSA(scoped_lockable)
#define GUARDED_BY(x) PCIFS_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) PCIFS_TSA(pt_guarded_by(x))
#define REQUIRES(...) PCIFS_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) PCIFS_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) PCIFS_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) PCIFS_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) PCIFS_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) PCIFS_TSA(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) PCIFS_TSA(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) PCIFS_TSA(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) PCIFS_TSA(locks_excluded(__VA_ARGS__))
#define ACQUIRED_BEFORE(...) PCIFS_TSA(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) PCIFS_TSA(acquired_after(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS PCIFS_TSA(no_thread_safety_analysis)

namespace pcifs {

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

class CAPABILITY("shared_mutex") SharedMutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  void lock_shared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void unlock_shared() RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  // For condition variables: cv.wait(lock.mutex(), pred) is not allowed by the
  // analysis, so use CondVar below.
  Mutex& mutex() { return mu_; }

 private:
  Mutex& mu_;
};

class SCOPED_CAPABILITY SharedLock {
 public:
  explicit SharedLock(SharedMutex& mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~SharedLock() RELEASE() { mu_.unlock_shared(); }
  SharedLock(const SharedLock&) = delete;
  SharedLock& operator=(const SharedLock&) = delete;

 private:
  SharedMutex& mu_;
};

class SCOPED_CAPABILITY ExclusiveLock {
 public:
  explicit ExclusiveLock(SharedMutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~ExclusiveLock() RELEASE() { mu_.unlock(); }
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;

 private:
  SharedMutex& mu_;
};

// A condition variable for Mutex. Waits require the mutex held (by MutexLock).
class CondVar {
 public:
  void wait(Mutex& mu) REQUIRES(mu) { cv_.wait(mu); }
  template <class Pred>
  void wait(Mutex& mu, Pred pred) REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    cv_.wait(mu, pred);
  }
  template <class Rep, class Period, class Pred>
  bool wait_for(Mutex& mu, const std::chrono::duration<Rep, Period>& d, Pred pred)
      REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    return cv_.wait_for(mu, d, pred);
  }
  template <class Clock, class Dur, class Pred>
  bool wait_until(Mutex& mu, const std::chrono::time_point<Clock, Dur>& t, Pred pred)
      REQUIRES(mu) NO_THREAD_SAFETY_ANALYSIS {
    return cv_.wait_until(mu, t, pred);
  }
  void notify_one() { cv_.notify_one(); }
  void notify_all() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

// Makes a lock-like object (held from acquired() to released(), on one
// thread) a mutex to ThreadSanitizer, so its deadlock detector sees the
// object in the lock order: holding a Mutex while acquiring it, and it while
// taking a Mutex, are edges of the same graph as plain mutex nestings, and a
// cycle is reported as a lock-order inversion. Without TSan it is empty.
// Call acquired() after the object is taken (no internal lock held) and
// released() before it is given back. A try-acquire that may wait before it
// fails counts as a blocking acquire when it succeeds: call acquired() then.
class LockOrderProbe {
 public:
#if defined(PCIFS_TSAN)
  LockOrderProbe() { __tsan_mutex_create(this, __tsan_mutex_not_static); }
  ~LockOrderProbe() { __tsan_mutex_destroy(this, __tsan_mutex_not_static); }
  void acquired() {
    __tsan_mutex_pre_lock(this, 0);
    __tsan_mutex_post_lock(this, 0, 0);
  }
  void try_acquired() {  // taken without waiting: no edge into it, only out of it
    __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
    __tsan_mutex_post_lock(this, __tsan_mutex_try_lock, 0);
  }
  void released() {
    __tsan_mutex_pre_unlock(this, 0);
    __tsan_mutex_post_unlock(this, 0);
  }
#else
  LockOrderProbe() = default;
  void acquired() {}
  void try_acquired() {}
  void released() {}
#endif
  LockOrderProbe(const LockOrderProbe&) = delete;
  LockOrderProbe& operator=(const LockOrderProbe&) = delete;
};

}  // namespace pcifs
