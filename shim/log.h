// Messages to the user: one prefix ("ipex_shim: "), one line each, on stderr, and
// rate-limited so that a problem met on every op call is said a few times, not a million.
// Torch-free, usable from the bootstrap and the core.
#pragma once

#include <string>

namespace ipex_shim {

enum class Severity { info, warning, error };

// Writes "ipex_shim: <severity>: <text>\n" in one write(2) call (info has no severity word).
void log_line(Severity severity, const std::string& text);

// Like log_line, but a given `key` is printed at most `limit` times per process; the last
// allowed print says that further ones are suppressed.
void log_limited(const std::string& key, int limit, Severity severity, const std::string& text);

}  // namespace ipex_shim
