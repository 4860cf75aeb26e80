// Parsing view files (SPEC S6) into ViewPolicy. Errors name the file, the
// field and what was expected, because they reach the user at start-up (S2:
// exit status 2, nothing mounted). Pure functions: thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "pcifs/result.hpp"
#include "pcifs/view.hpp"

namespace pcifs::core {

// The default view of S6.1 (no --view).
ViewPolicy default_view();

// Parses view JSON text. `source` names the file in error messages.
// On failure *error is "FILE: FIELD: expected WHAT (got ...)".
Result<ViewPolicy> parse_view(std::string_view json_text, const std::string& source,
                              std::string* error);

// Reads and parses a view file.
Result<ViewPolicy> load_view_file(const std::string& path, std::string* error);

// Parses one "devices" entry; nullopt when malformed.
std::optional<DeviceSelector> parse_selector(std::string_view text);

}  // namespace pcifs::core
