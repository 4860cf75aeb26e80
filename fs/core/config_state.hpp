// Saving and restoring a function's config state around power transitions and
// resets, in the manner of Linux pci_save_state()/pci_restore_state().
//
// A saved state is simply the full config image (read in D0 or D3hot); restore
// writes back only the registers software owns, in an order that matters:
//  1. PM control (PME_En, Data_Select): the function is in D0 now;
//  2. PCI Express Device/Link/Slot/Root Control (and the "2" registers): MPS,
//     MRRS, ASPM etc. must be right before the function may master or decode;
//  3. AER masks and severity (and Root Error Command on root ports);
//  4. the header, highest dword first, with BARs and bridge windows before the
//     Command register, which goes last: enabling decode over unprogrammed BARs
//     would claim random addresses (drivers/pci/pci.c pci_restore_config_space);
//  5. MSI address/data/mask then its control, MSI-X control: after Command,
//     since enabling MSI before bus mastering is set up is pointless at best.
// Not restored: RW1C status bits (never written), read-only registers, the
// DOE control register (abort would be a side effect), the MSI-X table (it
// lives in BAR memory, which the owner of the BAR re-programs).
//
// Pure functions over a Device; no locking of their own: the caller (the
// DeviceControl slot holder) guarantees no other access runs meanwhile.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "pcifs/backend.hpp"
#include "pcifs/result.hpp"

namespace pcifs::core {

using ConfigImage = std::vector<uint8_t>;

// The whole config space (info().config_size bytes).
Result<ConfigImage> read_config_image(backend::Device& dev);

// Writes the saved registers back, in the order above. Stops at the first
// failing device access.
Result<void> restore_config_state(backend::Device& dev, const ConfigImage& saved);

// The PM capability's No_Soft_Reset bit in a saved image (PCI PM 1.2 §5.6:
// D3hot -> D0 keeps config context when set). False without a PM capability.
bool no_soft_reset(const ConfigImage& image);

// The PowerState field (0..3) of PMCSR in an image, if it has a PM capability.
std::optional<unsigned> pmcsr_state(const ConfigImage& image);

// A copy of `image` with PMCSR's PowerState field set to D3 (3): how pcifs
// serves config reads of a function in D3cold, whose snapshot was taken in D0.
ConfigImage as_d3_snapshot(const ConfigImage& image);

}  // namespace pcifs::core
