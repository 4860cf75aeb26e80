// RevocationSink: how the core tells the FUSE layer to drop a device's BAR
// mappings [S12].
//
// The FUSE layer implements it with fuse_lowlevel_notify_inval_inode, which
// WAITS for page locks held by page faults in progress; such a fault's
// FUSE_READ may itself be inside a BAR read handler. Hence the rules the core
// keeps (see device_control.hpp):
//  - the sink is never called while holding any lock an access could wait on;
//  - an access that races a quiesce fails fast (EIO) instead of waiting for it.
// An implementation may therefore perform BAR accesses (they are admitted or
// refused at once), but must not call DeviceControl's control operations
// (set_power_state, reset, ...) from inside the callback.
//
// Ownership: the sink is owned by whoever created the DeviceControl and must
// outlive it. Thread safety: called from any thread, possibly concurrently for
// different devices.
#pragma once

#include "pcifs/mediator.hpp"

namespace pcifs::core {

// One interface for the core and the FUSE layer: the public one.
using RevocationSink = pcifs::RevocationSink;

}  // namespace pcifs::core
