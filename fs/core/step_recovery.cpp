#include "core/step_recovery.hpp"

#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <utility>

#include "core/cap_walk.hpp"
#include "core/log_limit.hpp"

namespace pcifs::core {
namespace {

std::string hex16(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04x", v & 0xffff);
  return buf;
}

// Step 2: D0 (if the device reads D3hot), then the image, Command last.
Result<void> restore_in_d0(backend::Device& dev, const StepRecord& rec, std::string& done) {
  auto now = read_config_image(dev);
  if (!now) return now.error();
  auto state = pmcsr_state(*now);
  if (state && *state != 0) {
    PCIFS_TRY(dev.set_power_state(PowerState::kD0));
    done += ", D" + std::to_string(*state) + (*state == 3 ? "hot" : "") + " -> D0";
  }
  PCIFS_TRY(restore_config_state(dev, rec.config));
  done += ", config restored (Command " + hex16(cfg_read(rec.config, PCI_COMMAND, 2)) + ")";
  return Ok();
}

}  // namespace

StepRecorder::StepRecorder(std::shared_ptr<StepJournal> journal, std::string root, Bdf bdf)
    : journal_(std::move(journal)), root_(std::move(root)), bdf_(bdf) {}

void StepRecorder::begin(const StepRecord& rec) {
  if (!journal_) return;
  auto r = journal_->record(root_, bdf_, rec);
  open_ = r.ok();
  if (!r) {
    PCIFS_LOG_LIMITED(error, "steps:" + bdf_.str(),
                      "{}: cannot journal the {} step ({}): a crash during it would not be "
                      "recovered at the next start",
                      bdf_.str(), to_string(rec.step), r.error().name());
  }
}

void StepRecorder::end() {
  if (open_) discard();
}

void StepRecorder::discard() {
  if (!journal_) return;
  open_ = false;
  if (auto r = journal_->clear(root_, bdf_); !r) {
    // A stale record only makes the next start restore a config image the
    // device already has.
    PCIFS_LOG_LIMITED(warn, "steps:" + bdf_.str(), "{}: cannot clear its step record ({})",
                      bdf_.str(), r.error().name());
  }
}

Result<std::optional<StepRecord>> StepRecorder::pending() const {
  if (!journal_) return std::optional<StepRecord>();
  return journal_->pending(root_, bdf_);
}

StepRecord restore_record(StepKind step, const ConfigImage& image) {
  StepRecord rec;
  rec.step = step;
  rec.config = image;
  if (image.size() >= PCI_COMMAND + 2)
    rec.command = static_cast<uint16_t>(cfg_read(image, PCI_COMMAND, 2));
  return rec;
}

Result<std::string> recover_step(backend::Device& dev, const StepRecord& rec) {
  std::string done;
  if (dev.info().has_rom()) {
    PCIFS_TRY(dev.rom_enable(false));
    done = "ROM decode off";
  }
  if (!rec.config.empty()) {
    PCIFS_TRY(restore_in_d0(dev, rec, done));
  } else if (rec.command) {
    PCIFS_TRY(dev.config_write(PCI_COMMAND, 2, *rec.command));
    done += ", Command " + hex16(*rec.command) + " restored";
  }
  if (done.starts_with(", ")) done.erase(0, 2);
  return done.empty() ? std::string("nothing to undo") : done;
}

std::optional<std::string> recover_at_attach(backend::Device& dev, StepRecorder& steps) {
  if (!steps.active()) return std::nullopt;
  const std::string bdf = dev.info().bdf.str();
  auto pending = steps.pending();
  if (pending && !*pending) return std::nullopt;
  if (!pending) {
    // Unreadable: what the device must come back to is unknown. Still make
    // it as safe as can be known (ROM decode off, D0); the record stays.
    if (dev.info().has_rom()) (void)dev.rom_enable(false);
    std::string why =
        "a crash left a step record that cannot be read (" +
        std::string(pending.error() == Errno(EBADMSG) ? "malformed" : pending.error().name()) + ")";
    spdlog::error("{}: {}: served unhealthy (EIO) until it is recovered", bdf, why);
    return why;
  }
  const StepRecord& rec = **pending;
  auto done = recover_step(dev, rec);
  if (!done) {
    std::string why = "recovery after a crash during its " + std::string(to_string(rec.step)) +
                      " step failed (" + std::string(done.error().name()) + ")";
    spdlog::error("{}: {}: served unhealthy (EIO); the next start tries again", bdf, why);
    return why;
  }
  steps.discard();
  spdlog::info("{}: recovered after a daemon died during its {} step: {}", bdf, to_string(rec.step),
               *done);
  return std::nullopt;
}

}  // namespace pcifs::core
