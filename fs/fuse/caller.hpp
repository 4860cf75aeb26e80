// Who is asking: the FUSE request context turned into a pcifs::Caller.
// fuse_req_ctx()->pid is the calling *thread*; claims belong to the thread
// group (S11), so the tgid is resolved through /proc when a claim may be
// taken (open). Other requests use the thread id only for logs.
#pragma once

#include "fuse/session.hpp"
#include "pcifs/types.hpp"

namespace pcifs::fuse {

Caller caller_of(fuse_req_t req);           // pid = thread id as FUSE gave it
Caller claiming_caller_of(fuse_req_t req);  // pid = thread-group id
// The thread group of a thread; the tid itself when /proc does not know it.
pid_t tgid_of(pid_t tid);

}  // namespace pcifs::fuse
