// RestartState (restart_state.hpp): the memfd the fd store keeps.
#include "control/restart_state.hpp"

#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace pcifs::control {

namespace {

constexpr char kMagic[8] = {'P', 'C', 'I', 'F', 'S', 'R', 'S', '1'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kFree = 0, kWriting = 1, kValid = 2;

constexpr uint32_t kRead = 1u << 0, kWrite = 1u << 1, kNonblock = 1u << 2, kClaiming = 1u << 3,
                   kDoeBusy = 1u << 4, kConfirmed = 1u << 5;

uint32_t aload(const uint32_t& v) {
  return std::atomic_ref<uint32_t>(const_cast<uint32_t&>(v)).load(std::memory_order_acquire);
}
void astore(uint32_t& v, uint32_t x) {
  std::atomic_ref<uint32_t>(v).store(x, std::memory_order_release);
}

template <size_t N>
void copy_name(char (&to)[N], const std::string& from) {
  const size_t n = std::min(from.size(), N - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

template <size_t N>
std::string name_of(const char (&from)[N]) {
  return std::string(from, strnlen(from, N));
}

}  // namespace

struct RestartState::Header {
  char magic[8];
  uint32_t version;
  uint32_t view_slots, handle_slots;
  uint32_t view_slot_size, handle_slot_size;
  uint32_t pad;
  uint64_t max_handle_id;  // atomic_ref
};

struct RestartState::ViewSlot {
  uint32_t state;
  uint32_t init_len;
  char name[256];
  uint8_t init[kMaxInit];
};

struct RestartState::HandleSlot {
  uint32_t state;
  uint32_t flags;
  uint64_t id;
  uint16_t domain;
  uint8_t bus, dev, fn, kind;
  uint16_t index;
  uint16_t feature_vendor;
  uint8_t feature_type;
  uint8_t pad[3];
  int32_t pid;
  uint32_t uid, gid;
  char view[200];
};

constexpr size_t kHeaderSize = 4096;
constexpr size_t kViewSlotSize = 1024;
constexpr size_t kHandleSlotSize = 256;

size_t RestartState::total_size() {
  static_assert(sizeof(ViewSlot) <= kViewSlotSize && sizeof(HandleSlot) <= kHandleSlotSize);
  return kHeaderSize + size_t{kViewSlots} * kViewSlotSize + size_t{kHandleSlots} * kHandleSlotSize;
}

RestartState::Header* RestartState::header() const { return reinterpret_cast<Header*>(base_); }
RestartState::ViewSlot* RestartState::view_slot(uint32_t i) const {
  return reinterpret_cast<ViewSlot*>(base_ + kHeaderSize + size_t{i} * kViewSlotSize);
}
RestartState::HandleSlot* RestartState::handle_slot(uint32_t i) const {
  return reinterpret_cast<HandleSlot*>(base_ + kHeaderSize + size_t{kViewSlots} * kViewSlotSize +
                                       size_t{i} * kHandleSlotSize);
}

std::unique_ptr<RestartState> RestartState::map(int fd, std::string* error) {
  void* base = ::mmap(nullptr, total_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    *error = std::string("mmap: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<RestartState>(new RestartState(fd, base));
}

std::unique_ptr<RestartState> RestartState::create(std::string* error) {
  const int fd = ::memfd_create("pcifs-restart-state", MFD_CLOEXEC);
  if (fd < 0) {
    *error = std::string("memfd_create: ") + std::strerror(errno);
    return nullptr;
  }
  if (::ftruncate(fd, static_cast<off_t>(total_size())) != 0) {  // sparse: pages as written
    *error = std::string("ftruncate: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  auto s = map(fd, error);
  if (!s) return nullptr;
  Header* h = s->header();
  h->version = kVersion;
  h->view_slots = kViewSlots;
  h->handle_slots = kHandleSlots;
  h->view_slot_size = kViewSlotSize;
  h->handle_slot_size = kHandleSlotSize;
  std::memcpy(h->magic, kMagic, sizeof kMagic);  // last: a torn header is not valid
  s->load(/*scan=*/false);
  return s;
}

std::unique_ptr<RestartState> RestartState::adopt(int fd, std::string* error) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != total_size()) {
    *error = "not a pcifs restart state (size " + std::to_string(st.st_size) + ")";
    ::close(fd);
    return nullptr;
  }
  auto s = map(fd, error);
  if (!s) return nullptr;
  const Header* h = s->header();
  if (std::memcmp(h->magic, kMagic, sizeof kMagic) != 0 || h->version != kVersion ||
      h->view_slots != kViewSlots || h->handle_slots != kHandleSlots ||
      h->view_slot_size != kViewSlotSize || h->handle_slot_size != kHandleSlotSize) {
    *error = "not a pcifs restart state of this version";
    return nullptr;  // the destructor unmaps and closes
  }
  s->load(/*scan=*/true);
  return s;
}

RestartState::~RestartState() {
  ::munmap(base_, total_size());
  ::close(fd_);
}

// Slots in holes of the memfd were never written: they are free without
// being read (reading a hole of a memfd would allocate its page).
std::vector<bool> RestartState::written_pages() const {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<bool> out((total_size() + page - 1) / page, false);
  off_t off = 0;
  for (;;) {
    const off_t data = ::lseek(fd_, off, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data past off
    off_t hole = ::lseek(fd_, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(total_size());
    for (size_t p = static_cast<size_t>(data) / page;
         p * page < static_cast<size_t>(hole) && p < out.size(); ++p) {
      out[p] = true;
    }
    off = hole;
  }
  return out;
}

void RestartState::load(bool scan) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const std::vector<bool> written = scan ? written_pages() : std::vector<bool>{};
  auto touched = [&](const void* slot) {
    if (!scan) return false;
    const size_t off = static_cast<size_t>(static_cast<const char*>(slot) - base_);
    return written[off / page];
  };
  {
    MutexLock lock(mu_);
    free_views_.reserve(kViewSlots);
    for (uint32_t i = kViewSlots; i-- > 0;) {
      ViewSlot* v = view_slot(i);
      if (touched(v) && aload(v->state) == kValid && v->init_len <= kMaxInit &&
          v->name[0] != '\0' && !view_index_.count(name_of(v->name))) {
        view_index_[name_of(v->name)] = i;
        continue;
      }
      if (touched(v) && aload(v->state) != kFree) astore(v->state, kFree);
      free_views_.push_back(i);
    }
  }
  for (HandleShard& sh : shards_) {
    MutexLock lock(sh.mu);
    sh.free.reserve(kSlotsPerShard);
  }
  // Highest slot first: each range gives its lowest slots first (the memfd's
  // pages are allocated as they are written).
  for (uint32_t i = kHandleSlots; i-- > 0;) {
    HandleSlot* s = handle_slot(i);
    if (touched(s) && aload(s->state) == kValid && s->id != 0) {
      HandleShard& home = shards_[shard_of(s->id)];
      MutexLock lock(home.mu);
      if (!home.index.count(s->id)) {
        home.index[s->id] = i;
        continue;
      }
    }
    if (touched(s) && aload(s->state) != kFree) astore(s->state, kFree);
    HandleShard& owner = shards_[i / kSlotsPerShard];
    MutexLock lock(owner.mu);
    owner.free.push_back(i);
  }
}

void RestartState::put_view(const std::string& name, const std::vector<uint8_t>& init) {
  if (init.size() > kMaxInit || name.empty() || name.size() >= sizeof(ViewSlot::name)) return;
  MutexLock lock(mu_);
  uint32_t i = 0;
  if (auto it = view_index_.find(name); it != view_index_.end()) {
    i = it->second;
  } else if (!free_views_.empty()) {
    i = free_views_.back();
    free_views_.pop_back();
    view_index_[name] = i;
  } else {
    if (!views_full_logged_) {
      spdlog::warn("restart state: more than {} views: not kept", kViewSlots);
    }
    views_full_logged_ = true;
    return;
  }
  ViewSlot* v = view_slot(i);
  astore(v->state, kWriting);
  copy_name(v->name, name);
  v->init_len = static_cast<uint32_t>(init.size());
  std::memcpy(v->init, init.data(), init.size());
  astore(v->state, kValid);
}

void RestartState::drop_view(const std::string& name) {
  MutexLock lock(mu_);
  auto it = view_index_.find(name);
  if (it == view_index_.end()) return;
  astore(view_slot(it->second)->state, kFree);
  free_views_.push_back(it->second);
  view_index_.erase(it);
}

std::optional<std::vector<uint8_t>> RestartState::view_init(const std::string& name) const {
  MutexLock lock(mu_);
  auto it = view_index_.find(name);
  if (it == view_index_.end()) return std::nullopt;
  const ViewSlot* v = view_slot(it->second);
  return std::vector<uint8_t>(v->init, v->init + v->init_len);
}

std::vector<std::string> RestartState::views() const {
  MutexLock lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, i] : view_index_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<uint32_t> RestartState::take_slot(uint32_t home) {
  for (uint32_t k = 0; k < kHandleShards; ++k) {
    HandleShard& sh = shards_[(home + k) % kHandleShards];
    MutexLock lock(sh.mu);
    if (sh.free.empty()) continue;
    const uint32_t slot = sh.free.back();
    sh.free.pop_back();
    return slot;
  }
  return std::nullopt;
}

void RestartState::free_slot(uint32_t slot) {
  HandleShard& owner = shards_[slot / kSlotsPerShard];
  MutexLock lock(owner.mu);
  owner.free.push_back(slot);  // never grows past kSlotsPerShard: reserved in load()
}

void RestartState::opened(const HandleRecord& r) noexcept {
  const std::optional<uint32_t> slot = take_slot(shard_of(r.id));
  if (!slot) {
    if (!handles_full_logged_.exchange(true)) {
      try {
        spdlog::warn("restart state: more than {} open handles: the rest do not survive a restart",
                     kHandleSlots);
      } catch (...) {
      }
    }
    return;
  }
  if (!write_handle(r, *slot)) free_slot(*slot);  // not journaled
  // The highest id ever journaled, raised by whichever shard saw a higher one.
  std::atomic_ref<uint64_t> max(header()->max_handle_id);
  for (uint64_t m = max.load(std::memory_order_relaxed); m < r.id;) {
    if (max.compare_exchange_weak(m, r.id, std::memory_order_release)) break;
  }
}

bool RestartState::write_handle(const HandleRecord& r, uint32_t slot) noexcept {
  HandleShard& sh = shards_[shard_of(r.id)];
  MutexLock lock(sh.mu);
  try {
    sh.index[r.id] = slot;  // may throw: nothing written yet
  } catch (...) {           // no memory for the index
    return false;
  }
  HandleSlot* s = handle_slot(slot);
  astore(s->state, kWriting);
  s->id = r.id;
  s->domain = r.ref.bdf.domain;
  s->bus = r.ref.bdf.bus;
  s->dev = r.ref.bdf.dev;
  s->fn = r.ref.bdf.fn;
  s->kind = static_cast<uint8_t>(r.ref.kind);
  s->index = r.ref.index;
  s->feature_vendor = r.ref.feature.vendor;
  s->feature_type = r.ref.feature.type;
  s->pid = r.caller.pid;
  s->uid = r.caller.uid;
  s->gid = r.caller.gid;
  copy_name(s->view, r.view);
  astore(s->flags, (r.flags.read ? kRead : 0u) | (r.flags.write ? kWrite : 0u) |
                       (r.flags.nonblock ? kNonblock : 0u) | (r.claiming ? kClaiming : 0u) |
                       (r.doe_busy ? kDoeBusy : 0u));
  astore(s->state, kValid);
  return true;
}

void RestartState::confirmed(HandleId id) noexcept {
  HandleShard& sh = shards_[shard_of(id)];
  MutexLock lock(sh.mu);
  auto it = sh.index.find(id);
  if (it == sh.index.end()) return;
  HandleSlot* s = handle_slot(it->second);
  astore(s->flags, aload(s->flags) | kConfirmed);
}

void RestartState::changed(HandleId id, bool claiming, bool doe_busy) noexcept {
  HandleShard& sh = shards_[shard_of(id)];
  MutexLock lock(sh.mu);
  auto it = sh.index.find(id);
  if (it == sh.index.end()) return;
  HandleSlot* s = handle_slot(it->second);
  uint32_t f = aload(s->flags) & ~uint32_t{kClaiming | kDoeBusy};
  astore(s->flags, f | (claiming ? kClaiming : 0u) | (doe_busy ? kDoeBusy : 0u));
}

void RestartState::released(HandleId id) noexcept {
  uint32_t slot = 0;
  {
    HandleShard& sh = shards_[shard_of(id)];
    MutexLock lock(sh.mu);
    auto it = sh.index.find(id);
    if (it == sh.index.end()) return;
    slot = it->second;
    astore(handle_slot(slot)->state, kFree);
    sh.index.erase(it);
  }
  free_slot(slot);
}

std::vector<HandleRecord> RestartState::handles() const {
  std::vector<HandleRecord> out;
  for (const HandleShard& sh : shards_) {
    MutexLock lock(sh.mu);
    for (const auto& [id, i] : sh.index) {
      const HandleSlot* s = handle_slot(i);
      const uint32_t f = aload(s->flags);
      HandleRecord r;
      r.id = s->id;
      r.view = name_of(s->view);
      r.ref.bdf = Bdf{s->domain, s->bus, s->dev, s->fn};
      r.ref.kind = static_cast<FileKind>(s->kind);
      r.ref.index = s->index;
      r.ref.feature = backend::DoeFeature{s->feature_vendor, s->feature_type};
      r.flags.read = (f & kRead) != 0;
      r.flags.write = (f & kWrite) != 0;
      r.flags.nonblock = (f & kNonblock) != 0;
      r.caller = Caller{s->pid, s->uid, s->gid};
      r.claiming = (f & kClaiming) != 0;
      // Unconfirmed: the daemon died between its open reply and the journal's
      // confirmation, or before the reply reached the kernel (which then
      // resends the open: the handle is an orphan). Without a claim it is
      // taken over (the kernel may hold it; an orphan costs one table entry).
      // With one it is not: an orphan would hold its group for good, and a
      // BAR handle without its claim must not touch the device (EBADF).
      if ((f & kConfirmed) == 0 && r.claiming) continue;
      r.doe_busy = (f & kDoeBusy) != 0;
      out.push_back(std::move(r));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const HandleRecord& a, const HandleRecord& b) { return a.id < b.id; });
  return out;
}

HandleId RestartState::first_free_id() const {
  std::atomic_ref<uint64_t> m(header()->max_handle_id);
  return m.load(std::memory_order_acquire) + 1;
}

}  // namespace pcifs::control
