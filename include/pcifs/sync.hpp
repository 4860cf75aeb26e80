// Annotated locking primitives, so clang's -Wthread-safety can check the
// locking rules written beside the data (GUARDED_BY, REQUIRES, ...).
// libstdc++'s std::mutex carries no annotations; these thin wrappers do.
// Mutex works with std::condition_variable_any (it has lock/unlock).
//
// Contention counters: each Mutex and SharedMutex is named where it is
// declared ("SimDevice::mu_"), and an acquisition that finds it taken counts
// itself, with the time it waited, in the site of that name, summed over every
// lock of the name (lock_contention(); `pcifs view locks`, pcifs-bench
// --core). An uncontended acquisition costs what it did (a try-lock is the
// same atomic exchange a lock begins with) and touches no shared counter. Not
// counted under TSan: its deadlock detector records a successful try-lock as
// one that cannot wait, so the lock order would go unchecked there.
//
// Lock order: the daemon's whole order is written in fs/core/mediator_state.hpp
// ("Lock order"). ACQUIRED_BEFORE/ACQUIRED_AFTER state it where clang can see
// both locks (members of one class); clang checks them under
// -Wthread-safety-beta, which the clang builds turn on. Across objects, TSan's
// deadlock detector holds the order (tools/test.sh tsan,
// tests/unit/core/lock_order_test.cpp); a lock-like object that is not a
// mutex (a flag + condition variable) reports itself to it with LockOrderProbe.
#pragma once

#include <sched.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

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

// Where contention is counted: every lock of one name shares its site.
struct LockSite {
  explicit LockSite(const char* n) : name(n) {}
  const std::string name;
  std::atomic<uint64_t> contended{0};  // acquisitions that found the lock taken
  std::atomic<uint64_t> wait_ns{0};    // how long they waited, in all
};

struct LockContention {
  std::string name;
  uint64_t contended = 0;
  uint64_t wait_ns = 0;
};

#if defined(PCIFS_TSAN)
inline constexpr bool kLockContentionCounted = false;
#else
inline constexpr bool kLockContentionCounted = true;
#endif

namespace detail {

struct LockSites {
  std::mutex mu;               // a leaf: nothing is taken under it
  std::deque<LockSite> sites;  // never shrinks: a Mutex keeps a pointer to its site
};

// Never destroyed: a Mutex of a static object may be contended during exit.
inline LockSites& lock_sites() {
  static auto* sites = new LockSites;
  return *sites;
}

inline LockSite& lock_site(const char* name) {
  LockSites& s = lock_sites();
  std::lock_guard<std::mutex> g(s.mu);
  for (LockSite& site : s.sites) {
    if (site.name == name) return site;
  }
  return s.sites.emplace_back(name);
}

// The slow path of an acquisition that found the lock taken: the site is
// found before waiting (no lock is nested in another), the acquisition counts
// itself before it waits (so a count can be seen while the lock is held) and
// adds its wait once it has the lock.
template <typename Acquire>
void contended_acquire(const char* name, std::atomic<LockSite*>& cache, Acquire acquire) {
  LockSite* site = cache.load(std::memory_order_acquire);
  if (site == nullptr) {
    site = &lock_site(name);
    cache.store(site, std::memory_order_release);
  }
  const auto t0 = std::chrono::steady_clock::now();
  site->contended.fetch_add(1, std::memory_order_relaxed);
  acquire();
  const auto waited = std::chrono::steady_clock::now() - t0;
  site->wait_ns.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count()),
      std::memory_order_relaxed);
}

}  // namespace detail

// Every site that has seen contention (or was asked for), in order of first
// contention; counts since the process started.
inline std::vector<LockContention> lock_contention() {
  detail::LockSites& s = detail::lock_sites();
  std::lock_guard<std::mutex> g(s.mu);
  std::vector<LockContention> out;
  out.reserve(s.sites.size());
  for (const LockSite& site : s.sites) {
    out.push_back({site.name, site.contended.load(std::memory_order_relaxed),
                   site.wait_ns.load(std::memory_order_relaxed)});
  }
  return out;
}

// `name` must outlive the lock (a string literal).
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  explicit Mutex(const char* name) : name_(name) {}
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() {
    if (!kLockContentionCounted) return mu_.lock();
    if (mu_.try_lock()) return;
    detail::contended_acquire(name_, site_, [this] { mu_.lock(); });
  }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  const char* name() const { return name_; }

 private:
  std::mutex mu_;
  const char* name_ = "(unnamed Mutex)";
  std::atomic<LockSite*> site_{nullptr};
};

class CAPABILITY("shared_mutex") SharedMutex {
 public:
  SharedMutex() = default;
  explicit SharedMutex(const char* name) : name_(name) {}
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void lock() ACQUIRE() {
    if (!kLockContentionCounted) return mu_.lock();
    if (mu_.try_lock()) return;
    detail::contended_acquire(name_, site_, [this] { mu_.lock(); });
  }
  void unlock() RELEASE() { mu_.unlock(); }
  void lock_shared() ACQUIRE_SHARED() {
    if (!kLockContentionCounted) return mu_.lock_shared();
    if (mu_.try_lock_shared()) return;
    detail::contended_acquire(name_, site_, [this] { mu_.lock_shared(); });
  }
  void unlock_shared() RELEASE_SHARED() { mu_.unlock_shared(); }
  const char* name() const { return name_; }

 private:
  friend class ReadMostlyMutex;  // names its shards
  std::shared_mutex mu_;
  const char* name_ = "(unnamed SharedMutex)";
  std::atomic<LockSite*> site_{nullptr};
};

// A reader-writer lock for what every request reads and almost nothing
// writes (the Mediator's device map, read by every lookup and open; written
// when a device arrives or leaves). One SharedMutex would be one cache line
// that every reader writes (its reader count) on every CPU; here a reader
// takes the shared lock of one of kShards SharedMutexes, the one of the CPU
// it runs on (rseq makes that a load), so readers on different CPUs write
// no common line. A writer takes every shard's exclusive lock, in order
// (each shard one lock to TSan's deadlock detector: always the same order).
// A reader may move to another CPU while it holds its shard, so it gives
// back the shard it took: use ReadMostlyShared, which remembers it.
class CAPABILITY("shared_mutex") ReadMostlyMutex {
 public:
  explicit ReadMostlyMutex(const char* name) {
    for (auto& s : shards_) s.mu.name_ = name;
  }
  ReadMostlyMutex(const ReadMostlyMutex&) = delete;
  ReadMostlyMutex& operator=(const ReadMostlyMutex&) = delete;

  void lock() ACQUIRE() {
    for (auto& s : shards_) s.mu.lock();
  }
  void unlock() RELEASE() {
    for (size_t i = kShards; i-- > 0;) shards_[i].mu.unlock();
  }
  // Returns the shard to give to unlock_shared().
  unsigned lock_shared() ACQUIRE_SHARED() {
    const int cpu = sched_getcpu();
    const unsigned i = static_cast<unsigned>(cpu < 0 ? 0 : cpu) % kShards;
    shards_[i].mu.lock_shared();
    return i;
  }
  void unlock_shared(unsigned shard) RELEASE_SHARED() { shards_[shard].mu.unlock_shared(); }

 private:
  static constexpr size_t kShards = 16;
  struct alignas(64) Shard {
    SharedMutex mu;
  };
  std::array<Shard, kShards> shards_;
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

class SCOPED_CAPABILITY ReadMostlyShared {
 public:
  explicit ReadMostlyShared(ReadMostlyMutex& mu) ACQUIRE_SHARED(mu)
      : mu_(mu), shard_(mu.lock_shared()) {}
  ~ReadMostlyShared() RELEASE() { mu_.unlock_shared(shard_); }
  ReadMostlyShared(const ReadMostlyShared&) = delete;
  ReadMostlyShared& operator=(const ReadMostlyShared&) = delete;

 private:
  ReadMostlyMutex& mu_;
  const unsigned shard_;
};

class SCOPED_CAPABILITY ReadMostlyExclusive {
 public:
  explicit ReadMostlyExclusive(ReadMostlyMutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~ReadMostlyExclusive() RELEASE() { mu_.unlock(); }
  ReadMostlyExclusive(const ReadMostlyExclusive&) = delete;
  ReadMostlyExclusive& operator=(const ReadMostlyExclusive&) = delete;

 private:
  ReadMostlyMutex& mu_;
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
